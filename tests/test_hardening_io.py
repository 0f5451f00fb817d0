"""Files that survive interruptions, and file input that fails with a clear message (issue 12, items 4, 7, 9).

Atomic files and folders (an interruption leaves the old version, never a
mixture, and no temporary behind, SIGTERM included), the checksums and
bounds of model folders, corrupted or mislabelled ``.npz`` files, complex
data, NWB row indices, the Sinkhorn blur range and a missing torch.
"""

import hashlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from connector_sim import _files
from connector_sim._files import check_writable_file, write_atomic, write_folder_atomic
from connector_sim.data import as_trial_data, bin_spike_times, load_arrays, load_npz, save_arrays

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def leftovers(folder):
    """Hidden temporaries (files or folders) the writers may have left in ``folder``."""
    return sorted(name for name in os.listdir(folder) if name.startswith(".tmp-"))


def python(code, **kwargs):
    """A Python subprocess running ``code`` with this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=REPOSITORY + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


# --------------------------------------------------------------------------- atomic files and folders


def test_a_failed_file_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    write_atomic(target, b"old")

    def half_then_fail(stream):
        stream.write(b"new, half wr")
        raise KeyboardInterrupt  # Ctrl-C in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_file_targets_that_cannot_be_written_have_clear_errors(tmp_path):
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a folder. Give a file name"):
        write_atomic(tmp_path / "folder.npz", b"x")
    with pytest.raises(FileNotFoundError, match="the folder .*missing' does not exist. Create it first"):
        write_atomic(tmp_path / "missing" / "a.npz", b"x")
    with pytest.raises(IsADirectoryError):
        save_arrays(tmp_path / "folder.npz", x=np.zeros(2))
    assert leftovers(tmp_path) == []


def test_an_unwritable_folder_is_found_before_any_work(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        try:
            check_writable_file(folder / "probe.npz")
            folder = "/sys"  # root writes anywhere but in read-only file systems
            check_writable_file(os.path.join(folder, "probe.npz"))
            pytest.skip("no unwritable folder here (root, and /sys is writable)")
        except PermissionError as exc:
            assert "no permission to create files in" in str(exc) and "Choose a writable folder" in str(exc)
    finally:
        (tmp_path / "read_only").chmod(0o700)


def test_a_folder_write_interrupted_at_any_step_leaves_the_old_folder(tmp_path, monkeypatch):
    target = tmp_path / "model"
    write_folder_atomic(target, {"a": b"old a", "b": b"old b"})

    def fail_on_second_file(stream):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomic(target, {"a": b"new a", "b": fail_on_second_file})
    assert (target / "a").read_bytes() == b"old a" and (target / "b").read_bytes() == b"old b"

    # An interruption between the two renames (old folder moved aside, new one not yet in): the old one comes back.
    renames = []
    real_rename = os.rename

    def rename(source, destination):
        renames.append(destination)
        if len(renames) == 2:
            raise KeyboardInterrupt
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        write_folder_atomic(target, {"a": b"new a", "b": b"new b"})
    monkeypatch.setattr(os, "rename", real_rename)
    assert (target / "a").read_bytes() == b"old a" and (target / "b").read_bytes() == b"old b"
    assert leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["model"]

    write_folder_atomic(target, {"a": b"new a", "b": b"new b"})
    assert (target / "a").read_bytes() == b"new a" and sorted(os.listdir(tmp_path)) == ["model"]


def test_a_folder_write_refuses_to_delete_other_files(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"holds other files \('notes.txt'\)"):
        write_folder_atomic(tmp_path / "mine", {"a": b"x"})
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="a file of that name exists"):
        write_folder_atomic(tmp_path / "file", {"a": b"x"})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


WRITER = """
    import os, sys, time
    from connector_sim import _files
    target = sys.argv[1]

    def slow(stream):
        stream.write(b"new, half written")
        stream.flush()
        print("writing", flush=True)
        time.sleep(30)

    with _files.sigterm_as_exit():
        if sys.argv[2] == "file":
            _files.write_atomic(target, slow)
        else:
            _files.write_folder_atomic(target, {"a": b"new a", "b": slow})
"""


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_sigterm_in_the_middle_of_a_write_leaves_the_old_version_and_no_temporary(tmp_path, kind):
    target = tmp_path / "target"
    if kind == "file":
        write_atomic(target, b"old")
    else:
        write_folder_atomic(target, {"a": b"old a", "b": b"old b"})
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(target), kind],
                               env=dict(os.environ, PYTHONPATH=REPOSITORY), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    assert leftovers(tmp_path)  # the half-written temporary is there...
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert leftovers(tmp_path) == []  # ...and gone
    if kind == "file":
        assert target.read_bytes() == b"old"
    else:
        assert (target / "a").read_bytes() == b"old a" and (target / "b").read_bytes() == b"old b"


# --------------------------------------------------------------------------- model folders


def fit_tiny(hidden=8, seed=0):
    """A Connector fitted in well under a second (a 1-layer CNF, 2 epochs, 60 rows)."""
    pytest.importorskip("torch")
    from connector_sim.inference import Connector

    rng = np.random.default_rng(0)
    m = rng.standard_normal((60, 2))
    kappa = np.cumsum(0.1 * rng.standard_normal((4, 12, 2)), axis=1)
    return Connector(n_epochs=2, hidden=hidden, n_layers=1, n_regression_samples=50, random_state=seed,
                     device="cpu").fit_latents(kappa, m)


@pytest.fixture(scope="module")
def tiny_connector():
    return fit_tiny()


def _rewrite_config(folder, edit, recompute_checksum):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    if recompute_checksum:
        from connector_sim.inference.flows import _canonical

        config["config_sha256"] = hashlib.sha256(_canonical(config)).hexdigest()
    path.write_text(json.dumps(config))


def test_connector_save_interrupted_between_its_files_keeps_the_old_model(tiny_connector, tmp_path, monkeypatch):
    from connector_sim.inference import Connector

    tiny_connector.save(tmp_path / "model")
    before = tiny_connector.sample_rows(50, random_state=1)[0]
    other = fit_tiny(hidden=4, seed=5)
    written = []
    real = _files._write_stream

    def write(stream, data):
        written.append(os.path.basename(stream.name))
        if len(written) == 2:  # weights.pt is written, config.json is not
            raise KeyboardInterrupt
        real(stream, data)

    monkeypatch.setattr(_files, "_write_stream", write)
    with pytest.raises(KeyboardInterrupt):
        other.save(tmp_path / "model")
    monkeypatch.setattr(_files, "_write_stream", real)
    assert written == ["weights.pt", "config.json"]
    assert sorted(os.listdir(tmp_path)) == ["model"]
    np.testing.assert_array_equal(Connector.load(tmp_path / "model").sample_rows(50, random_state=1)[0], before)
    other.save(tmp_path / "model")  # a save that completes replaces the model
    assert Connector.load(tmp_path / "model").marginal_.hidden == 4


def test_an_edited_config_is_rejected_before_anything_is_allocated(tiny_connector, tmp_path):
    from connector_sim.inference import Connector, ModelFileError

    tiny_connector.save(tmp_path / "model")

    def huge(config):
        config["marginal"]["hidden"] = 200_000  # 4 x 200,000^2 floats = 640 GB if it were believed

    _rewrite_config(tmp_path / "model", huge, recompute_checksum=False)
    started = time.perf_counter()
    with pytest.raises(ModelFileError, match="config.json does not match its checksum: the config was modified"):
        Connector.load(tmp_path / "model")
    # Even with a recomputed checksum: sizes are bounded, and must agree with the weights' shapes.
    _rewrite_config(tmp_path / "model", lambda config: None, recompute_checksum=True)
    with pytest.raises(ModelFileError, match=r"'hidden' must be an int in \[1, 65536\]. Got 200000"):
        Connector.load(tmp_path / "model")
    _rewrite_config(tmp_path / "model", lambda config: config["marginal"].update(hidden=9),
                    recompute_checksum=True)
    with pytest.raises(ModelFileError, match=r"weights do not match its config \(hidden=9"):
        Connector.load(tmp_path / "model")
    _rewrite_config(tmp_path / "model", lambda config: config["params"].update(hidden=200_000),
                    recompute_checksum=True)
    with pytest.raises(ModelFileError, match=r"invalid parameter: The 'hidden' parameter of FlowMatchingCNF must"):
        Connector.load(tmp_path / "model")
    _rewrite_config(tmp_path / "model", lambda config: config["params"].update(hidden=8), recompute_checksum=True)
    _rewrite_config(tmp_path / "model", lambda config: config.update(alpha=7.0),
                    recompute_checksum=True)
    with pytest.raises(ModelFileError, match=r"'alpha' must be a finite number in \(0, 1.0\]"):
        Connector.load(tmp_path / "model")
    assert time.perf_counter() - started < 5


def test_tampered_weights_are_rejected_without_suggesting_pickle(tiny_connector, tmp_path):
    from connector_sim.inference import Connector, ModelFileError

    tiny_connector.save(tmp_path / "model")
    weights = tmp_path / "model" / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="weights.pt does not match its config"):
        Connector.load(tmp_path / "model")

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    # A pickle that would run code, with both checksums made to match: torch refuses it, and so do we.
    weights.write_bytes(pickle.dumps({"marginal.mean": Payload()}))
    _rewrite_config(tmp_path / "model",
                    lambda config: config.update(weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest()),
                    recompute_checksum=True)
    with pytest.raises(ModelFileError, match="weights.pt is not a valid model file") as error:
        Connector.load(tmp_path / "model")
    assert "weights_only" not in str(error.value) and "Do not load it with pickle" in str(error.value)


# --------------------------------------------------------------------------- data files


def test_corrupted_truncated_and_mislabelled_npz_files_give_one_clear_error(tmp_path):
    save_arrays(tmp_path / "good.npz", rates=np.arange(2 * 3 * 4.0).reshape(2, 3, 4), dt=0.1)
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    corrupted = bytearray(data)
    corrupted[len(data) // 4] ^= 0xFF  # inside the first member: its CRC no longer matches
    (tmp_path / "corrupted.npz").write_bytes(bytes(corrupted))
    np.save(tmp_path / "array.npy", np.zeros(3))
    os.replace(tmp_path / "array.npy", tmp_path / "array.npz")
    (tmp_path / "text.npz").write_text("rates,1,2,3")
    cases = {"truncated.npz": "truncated or corrupted", "corrupted.npz": "truncated or corrupted",
             "array.npz": r"it is a single .npy array", "text.npz": "it is not a zip archive"}
    for name, message in cases.items():
        for load in (load_arrays, load_npz):
            with pytest.raises(ValueError, match=rf"'.*{name}' is not a readable .npz archive .*{message}"):
                load(tmp_path / name)
    assert load_arrays(tmp_path / "good.npz")["rates"].shape == (2, 3, 4)


def test_complex_data_is_an_error_not_silently_truncated():
    rates = np.ones((2, 5, 3)) * (1 + 1j)
    with pytest.raises(TypeError, match="must be a real numeric array. Got dtype complex128"):
        as_trial_data(rates)
    with pytest.raises(TypeError, match="spikes of trial 1 must be real. Got dtype complex128"):
        as_trial_data([np.ones((5, 3)), np.ones((4, 3)) * 1j])
    with pytest.raises(TypeError, match="lengths must be integers .* Got dtype complex128"):
        as_trial_data(np.ones((2, 5, 3)), lengths=np.array([5, 4]) + 0j)
    with pytest.raises(TypeError, match=r"spike_times\[0\] must hold real numbers. Got dtype complex128"):
        bin_spike_times([np.array([0.1 + 1j])], [0.0], [1.0])
    with pytest.raises(TypeError, match="starts must hold real numbers"):
        bin_spike_times([np.array([0.1])], [0.0j], [1.0])



def test_complex_network_files_are_refused(tmp_path):
    from connector_sim.data import load_network

    save_arrays(tmp_path / "m.npz", m=np.ones((3, 1)) * 1j, n=np.ones((3, 1)), tau=1.0, activation="tanh")
    with pytest.raises(ValueError, match="m.npz' does not hold a valid network: m must be real"):
        load_network(tmp_path / "m.npz")
    save_arrays(tmp_path / "tau.npz", m=np.ones((3, 1)), n=np.ones((3, 1)), tau=1.0 + 1j, activation="tanh")
    with pytest.raises(ValueError, match="tau.npz' does not hold a valid network: 'tau' must be one real number"):
        load_network(tmp_path / "tau.npz")


def test_read_nwb_refuses_rows_out_of_range_and_negative_rows(tmp_path):
    pynwb = pytest.importorskip("pynwb")
    from datetime import datetime, timezone

    from connector_sim.data import read_nwb

    nwbfile = pynwb.NWBFile(session_description="test", identifier="hardening",
                            session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    for times in ([0.1, 0.5], [0.2], [0.3, 0.9]):
        nwbfile.add_unit(spike_times=times)
    nwbfile.add_trial(start_time=0.0, stop_time=1.0)
    nwbfile.add_trial(start_time=1.0, stop_time=2.0)
    path = tmp_path / "session.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as stream:
        stream.write(nwbfile)
    assert read_nwb(path, units=[2, 0], trials=[1], smoothing=None).spikes.shape == (1, 100, 2)
    for units, trials, message in [([5], None, r"units must index rows of the units table, in \[0, 2\]. Got 5"),
                                   ([-1], None, r"Got -1 \(negative indices are not allowed\)"),
                                   (None, [2], r"trials must index rows of the trials table, in \[0, 1\]. Got 2"),
                                   (None, [-2], "negative indices are not allowed"),
                                   ([], None, "units is empty")]:
        with pytest.raises(ValueError, match=message):
            read_nwb(path, units=units, trials=trials)
    with pytest.raises(TypeError, match="integer row indices"):
        read_nwb(path, units=[0.5])


# --------------------------------------------------------------------------- inference inputs


def test_blur_outside_the_solver_s_accurate_range_is_refused_before_sampling():
    pytest.importorskip("geomloss")
    from connector_sim import Gaussian
    from connector_sim.inference import dissimilarity
    from connector_sim.inference.distances import sinkhorn_divergence

    class NeverSampled(Gaussian):
        def sample_rows(self, *args, **kwargs):
            raise AssertionError("sampled before checking blur")

    p = NeverSampled(np.zeros(4), np.eye(4), rank=2)
    for blur in (1e-200, 1e-7, 1e7, 1e20):
        with pytest.raises(ValueError, match=r"'blur' parameter of dissimilarity must be in \[1e-06, 1e\+06\]"):
            dissimilarity(p, p, blur=blur)
    for blur in (float("nan"), 0.0, -1.0):
        with pytest.raises(ValueError, match="must be a finite number > 0"):
            dissimilarity(p, p, blur=blur)
    with pytest.raises(ValueError, match=r"'scaling' parameter of dissimilarity must be in \(0, 0.99\]"):
        dissimilarity(p, p, scaling=0.999999)
    # At both ends of the range the value is finite and right: S(x, x + s) = |s|^2 / 2 for a translation
    # (to 2% at blur 1e6, where the entropic cost tends to the squared distance of the means over 2).
    x = np.random.default_rng(0).standard_normal((30, 2))
    for blur in (1e-6, 1e6):
        assert sinkhorn_divergence(x, x + [0.5, 0.0], blur=blur) == pytest.approx(0.125, rel=0.02)


def test_a_missing_torch_is_reported_with_how_to_install_it(tmp_path):
    save_arrays(tmp_path / "data.npz", rates=np.zeros((2, 5, 4)))
    process = python(f"""
        import sys
        sys.modules["torch"] = None  # as if torch were not installed
        from connector_sim.cli import main
        try:
            from connector_sim.inference import Connector
        except ImportError as exc:
            print("import:", exc)
        for argv in (["fit", {str(tmp_path / "data.npz")!r}, "--rank", "1", "--out", {str(tmp_path / "f.npz")!r}],
                     ["infer", {str(tmp_path / "net.npz")!r}, "--out", {str(tmp_path / "model")!r}],
                     ["demo", "--quick", "--out", {str(tmp_path / "report")!r}]):
            print("status:", main(argv))
    """)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    hint = 'pip install "connector-sim[inference]" (or pip install torch==2.13.0 geomloss)'
    assert out.startswith("import: connector_sim.inference needs torch, which is not installed here.") and hint in out
    assert out.count("status: 2") == 3
    lines = err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["connector-sim fit", "connector-sim infer", "connector-sim demo"]
    assert all(hint in line for line in lines) and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["data.npz"]  # nothing ran, nothing was written


def test_settings_that_cannot_work_fail_before_training():
    pytest.importorskip("torch")
    from connector_sim.inference import LINT, Connector

    rates = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 6, 3))
    with pytest.raises(ValueError, match="'rank' parameter of LINT must be at most the number of neurons, 3"):
        LINT(rank=5, n_epochs=1).fit(rates)
    m = np.random.default_rng(1).standard_normal((20, 2))
    kappa = np.zeros((2, 5, 2))
    started = time.perf_counter()
    with pytest.raises(ValueError, match="A scalar conditional variance must be finite and >= 0. Got -1"):
        Connector(n_covariance=-1.0, n_epochs=10_000).fit_latents(kappa, m)  # not after 10,000 epochs
    assert time.perf_counter() - started < 5


def test_read_nwb_of_a_missing_or_non_hdf5_file(tmp_path):
    pytest.importorskip("pynwb")
    from connector_sim.data import read_nwb

    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_nwb(tmp_path / "missing.nwb")
    (tmp_path / "text.nwb").write_text("not hdf5")
    with pytest.raises(ValueError, match="is not an NWB file"):
        read_nwb(tmp_path / "text.nwb")
    # A truncated HDF5 file: h5py's OSError becomes a ValueError that says so.
    import h5py

    with h5py.File(tmp_path / "whole.h5", "w") as file:
        file["x"] = np.arange(10_000.0)
    data = (tmp_path / "whole.h5").read_bytes()
    (tmp_path / "truncated.nwb").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.nwb' is not a readable NWB file .* truncated or corrupted"):
        read_nwb(tmp_path / "truncated.nwb")


def test_temporaries_of_writes_still_running_at_exit_are_removed(tmp_path):
    # The last resort (atexit): the interpreter exits while a daemon thread is in the middle of a write.
    process = python(f"""
        import threading, time
        from connector_sim import _files

        started = threading.Event()

        def slow(stream):
            stream.write(b"half")
            started.set()
            time.sleep(30)

        threading.Thread(target=_files.write_atomic, args=({str(tmp_path / "a.bin")!r}, slow), daemon=True).start()
        started.wait()
        print(sorted(_files._LIVE.values()) == [__import__("os").getpid()], flush=True)
    """)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and out == "True\n", err
    assert os.listdir(tmp_path) == []


def test_read_nwb_treats_a_broken_link_as_a_damaged_file(tmp_path, monkeypatch):
    # Flipped bits in a link made hdmf warn (BrokenLinkWarning) and go on reading; found by the fuzz suite.
    pytest.importorskip("pynwb")
    import warnings

    from hdmf.backends.hdf5.h5tools import BrokenLinkWarning

    import connector_sim.data as data

    def damaged(NWBHDF5IO, path, units):
        warnings.warn("Path to Group altered/broken at /stimulus", BrokenLinkWarning)
        return [np.array([0.1])], np.array([0.0]), np.array([1.0])

    monkeypatch.setattr(data, "_has_hdf5_signature", lambda path: True)
    monkeypatch.setattr(data, "_read_nwb_tables", damaged)
    (tmp_path / "flipped.nwb").write_bytes(b"")
    with pytest.raises(ValueError, match=r"flipped.nwb' is a damaged NWB file \(Path to Group altered/broken"):
        data.read_nwb(tmp_path / "flipped.nwb")


def test_binning_that_cannot_fit_in_memory_is_refused_before_any_work(monkeypatch):
    from connector_sim import TooLargeError, _memory

    monkeypatch.setattr(_memory, "max_bytes", 10**9)
    started = time.perf_counter()
    with pytest.raises(TooLargeError, match=r"Binning 4 trial\(s\) of up to 800000000 bins x 3 unit\(s\) "
                                            r"\(bins of 1e-09 s\) needs 102 GB"):
        bin_spike_times([[0.1], [0.2], [0.3]], [0.0, 1.0, 2.0, 3.0], [0.8, 1.8, 2.8, 3.8], bin_width=1e-9)
    with pytest.raises(TooLargeError, match="A smoothing kernel of 3.0 x 0.1 s in bins of 1e-09 s"):
        bin_spike_times([[0.1]], [0.0], [1e-8], bin_width=1e-9, smoothing=0.1)
    with pytest.raises(TooLargeError, match="Binning 1 trial"):
        bin_spike_times([[0.1]], [0.0], [1e300], bin_width=1e-300)
    assert time.perf_counter() - started < 1
