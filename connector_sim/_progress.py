"""Progress bars for the command line: one tqdm bar on stderr, fed by the library's callbacks.

The library is silent unless asked; the CLI asks. :class:`Progress` gives
each long step the callback it expects and draws a bar with an ETA:

* :meth:`Progress.epochs` -- ``callback(estimator, epoch, losses)`` of LINT,
  VelocityMatching, FlowMatchingCNF, Connector and DriftDiffusionMatching
  (a new estimator starts a new bar of ``estimator.n_epochs`` epochs);
* :meth:`Progress.steps` -- ``progress(steps_done, n_steps)`` of
  :func:`connector_sim.simulate.simulate` (a count that goes back, or a new
  total, starts a new bar);
* :meth:`Progress.runs` -- ``progress(done, total, description)`` of
  :func:`connector_sim.perturbations.perturbation_study`.

Disabled (``--quiet``, or tqdm not installed) every callback is None, so
that nothing is computed for a bar; ``--quiet`` also silences
:meth:`Progress.log`. A bar is made at the first call of its
callback, never before: bad input found before the work starts stays a
one-line message. Leaving the ``with`` block (also by Ctrl-C) closes the bar.
"""

import sys


def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; without it the CLI just shows no bars
        return None
    return tqdm


class Progress:
    """A context manager that draws at most one progress bar at a time on stderr.

    Parameters
    ----------
    enabled : bool, default=True
        False: no bars (every callback is None) and no :meth:`log` messages.
    file : file object, optional
        Where bars go; default ``sys.stderr`` at the time a bar starts.
    """

    def __init__(self, enabled=True, file=None):
        self.enabled = bool(enabled)
        self.bars = self.enabled and _tqdm() is not None
        self.file = file
        self._bar = None
        self._owner = None  # what the open bar follows: an estimator, or (description, total)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def close(self):
        """Close the open bar, if any (its last state stays on the terminal)."""
        if self._bar is not None:
            self._bar.close()
        self._bar, self._owner = None, None

    def log(self, message):
        """A progress message on stderr (nothing when disabled), after closing the open bar."""
        if self.enabled:
            self.close()
            print(message, file=self.file or sys.stderr, flush=True)

    def echo(self, message):
        """A result line on stdout (always), after closing the open bar."""
        self.close()
        print(message, flush=True)

    def _start(self, owner, description, total, unit, delay=0.0):
        self.close()
        self._bar = _tqdm()(total=total, desc=description, unit=unit, file=self.file or sys.stderr,
                            dynamic_ncols=True, leave=True, delay=delay)
        self._owner = owner
        return self._bar

    def epochs(self, description, labels=()):
        """``callback(estimator, epoch, losses)`` for estimators that train by epochs, or None when disabled.

        The k-th estimator seen gets ``labels[k]`` after ``description`` (e.g.
        Connector's "marginal flow", then "conditional flow"). Returns False:
        the bar never stops training.
        """
        if not self.bars:
            return None
        seen = []

        def callback(estimator, epoch, losses):
            bar = self._bar
            if self._owner is not estimator:
                label = labels[len(seen)] if len(seen) < len(labels) else ""
                seen.append(estimator)
                bar = self._start(estimator, f"{description} {label}".strip(), int(estimator.n_epochs), "epoch")
            bar.update(max(0, int(epoch) - bar.n))
            loss = losses.get("val_loss") if losses.get("val_loss") is not None else losses.get("train_loss")
            if loss is not None:
                bar.set_postfix_str(f"loss {float(loss):.4g}", refresh=bar.n >= bar.total)
            if bar.n >= bar.total:  # done: the bar's time is the training's, not what follows
                self.close()
            return False

        return callback

    def steps(self, description, delay=1.0):
        """``progress(steps_done, n_steps)`` for :func:`~connector_sim.simulate.simulate`, or None when disabled.

        The bar shows only once a simulation has run ``delay`` seconds: short
        ones stay silent.
        """
        if not self.bars:
            return None

        def progress(done, total):
            bar = self._bar
            if self._owner != (description, total) or done < bar.n:
                bar = self._start((description, total), description, int(total), "step", delay)
            bar.update(int(done) - bar.n)

        return progress

    def runs(self, description):
        """``progress(done, total, what)`` for perturbation_study, or None when disabled."""
        if not self.bars:
            return None

        def progress(done, total, what=None):
            bar = self._bar
            if self._owner != (description, total) or done < bar.n:
                bar = self._start((description, total), description, int(total), "run")
            bar.update(int(done) - bar.n)

        return progress
