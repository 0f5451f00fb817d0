"""Files written atomically, and values made JSON-safe.

Shared by the report writers (demo, pipeline), the command line and the
flow bundles of the inference package. NumPy only: importing it stays light.
"""

import math
import os
import tempfile

import numpy as np


def json_safe(value):
    """Convert NumPy scalars and arrays (and nested containers) to JSON types; NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        # JSON has no NaN or infinity: write them as null.
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _publish(temporary, path):
    """Rename ``temporary`` onto ``path`` with the usual file mode (mkstemp makes it 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(temporary, 0o666 & ~mask)
    os.replace(temporary, path)


def write_atomic(path, data):
    """Write ``data`` to ``path`` through a synced temporary file in the same folder and a rename.

    ``data`` is bytes, or a function that writes to the binary stream it is
    given (``np.savez``, ``figure.savefig``). A reader sees the old file or
    the whole new one, never half of it.
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as stream:
            if callable(data):
                data(stream)
            else:
                stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        _publish(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
