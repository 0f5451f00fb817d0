"""A task-trained network: context-dependent decision making (Connector paper, section 6.2).

The task of Dubreuil et al. (2022) and Valente et al. (2022) as used in the
Connector paper: two noisy stimulus channels and two context cues; the
network reports the sign of the mean of the channel the context selects.
Inputs u_t (D = 4): ``[stimulus A, stimulus B, context A, context B]``.

- fixation (``fixation`` steps): contexts only;
- stimulus (``stimulus`` steps): channel c carries its coherence s_c plus
  N(0, noise_std^2) noise per step;
- delay, then decision (``decision`` steps): the readout
  z_t = w^T phi(x_t) / N must equal sign(s_cued) (the loss is the mean
  squared error over the decision steps only).

The network is a rank-1 lrRNN without bias (the paper's example has none),
trained by backpropagation through time on the exact latent form
x_t = m kappa_t + I v_t (SPEC eq. 2-3, from x_0 = 0). Accuracy is the
fraction of trials whose mean readout over the decision steps has the
target's sign.

Retrain from the command line (torch needed)::

    python -m connector_sim.tasks train --out cddm.npz [--n-neurons 512] [--seed 0]

:func:`cddm_dataset` turns a trained network into a data set with inputs
(rates, inputs, lengths) for LINT.

The trial generator and data set are NumPy; only training imports torch.
"""

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ._memory import check_allocation
from ._validation import check_int, check_n_threads, check_positive_scalar, check_random_state
from .network import LowRankRNN


@dataclass(frozen=True)
class CDDMTask:
    """Timing (in steps of ``dt``) and statistics of the context-dependent decision task.

    Defaults: dt = 20 ms, tau = 100 ms (alpha = 0.2); 5 fixation, 40
    stimulus, 5 delay and 10 decision steps (1.2 s); coherences
    +-{0.1, 0.2, 0.4} per channel, noise std 0.1 per step; context cue 1.
    """

    dt: float = 0.02
    tau: float = 0.1
    fixation: int = 5
    stimulus: int = 40
    delay: int = 5
    decision: int = 10
    coherences: tuple = (0.1, 0.2, 0.4)
    noise_std: float = 0.1
    context_value: float = 1.0

    @property
    def n_steps(self):
        return self.fixation + self.stimulus + self.delay + self.decision

    @property
    def alpha(self):
        return self.dt / self.tau

    def validate(self):
        check_positive_scalar(self.dt, "dt", owner="CDDMTask")
        check_positive_scalar(self.tau, "tau", owner="CDDMTask")
        if self.dt > self.tau:
            raise ValueError(f"CDDMTask needs dt <= tau. Got dt={self.dt}, tau={self.tau}.")
        for name in ("fixation", "delay"):
            check_int(getattr(self, name), name, minimum=0, owner="CDDMTask")
        for name in ("stimulus", "decision"):
            check_int(getattr(self, name), name, minimum=1, owner="CDDMTask")
        if len(self.coherences) == 0 or any(c <= 0 for c in self.coherences):
            raise ValueError(f"CDDMTask coherences must be positive numbers. Got {self.coherences!r}.")
        if self.noise_std < 0:
            raise ValueError(f"CDDMTask noise_std must be >= 0. Got {self.noise_std}.")
        return self


@dataclass
class CDDMTrials:
    """A batch of task trials (see :func:`cddm_trials`).

    Attributes
    ----------
    inputs : ndarray of shape (n_trials, n_steps, 4)
    targets : ndarray of shape (n_trials,)
        sign(s_cued), +-1.
    decision_mask : ndarray of shape (n_steps,), bool
    coherence : ndarray of shape (n_trials, 2)
        s_A, s_B.
    context : ndarray of shape (n_trials,), int
        0 attends channel A, 1 channel B.
    """

    inputs: np.ndarray
    targets: np.ndarray
    decision_mask: np.ndarray
    coherence: np.ndarray
    context: np.ndarray


def cddm_trials(n_trials, task=None, random_state=None):
    """Draw context-dependent decision trials.

    Each trial draws s_A and s_B independently and uniformly from
    +-coherences, and the context uniformly from {A, B}::

        u_t[c] = s_c + noise_std xi_t   (stimulus steps; 0 elsewhere), c in {A, B}
        u_t[2 + context] = context_value  (all steps)
        target = sign(s_context)

    Parameters
    ----------
    n_trials : int
    task : CDDMTask, optional
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    CDDMTrials
    """
    task = (task or CDDMTask()).validate()
    n_trials = check_int(n_trials, "n_trials", minimum=1, owner="cddm_trials")
    check_allocation(8 * n_trials * (2 * task.n_steps * 4 + 8), f"cddm_trials({n_trials}) of {task.n_steps} steps",
                     "Ask for fewer trials.")
    rng = check_random_state(random_state)
    levels = np.concatenate([-np.asarray(task.coherences, float), np.asarray(task.coherences, float)])
    coherence = rng.choice(levels, size=(n_trials, 2))
    context = rng.integers(0, 2, n_trials)
    T = task.n_steps
    inputs = np.zeros((n_trials, T, 4))
    on = slice(task.fixation, task.fixation + task.stimulus)
    inputs[:, on, :2] = coherence[:, None, :] + task.noise_std * rng.standard_normal((n_trials, task.stimulus, 2))
    inputs[np.arange(n_trials), :, 2 + context] = task.context_value
    targets = np.sign(coherence[np.arange(n_trials), context])
    mask = np.zeros(T, bool)
    mask[T - task.decision:] = True
    return CDDMTrials(inputs, targets, mask, coherence, context)


@dataclass
class TrainedCDDM:
    """A rank-1 network trained on the task (see :func:`train_cddm`).

    Attributes
    ----------
    network : LowRankRNN
        Rank 1, 4 inputs, no bias, tau = task.tau.
    readout : ndarray of shape (n_neurons,)
        w of z = w^T phi(x) / N.
    task : CDDMTask
    accuracy : float
        On ``n_test`` fresh trials.
    history : dict of lists
        "iteration", "loss", "accuracy" (of the training batches).
    train_time : float
        Seconds.
    """

    network: LowRankRNN
    readout: np.ndarray
    task: CDDMTask
    accuracy: float
    history: dict = field(default_factory=dict)
    train_time: float = 0.0

    def save(self, path):
        """Write the network, readout, task and accuracy to ``path`` (.npz, atomic)."""
        from .data import save_arrays

        task = asdict(self.task)
        task["coherences"] = np.asarray(task["coherences"], float)
        save_arrays(os.fspath(path), m=self.network.m, n=self.network.n, I=self.network.I, b=self.network.b,
                    readout=self.readout, accuracy=self.accuracy, train_time=self.train_time,
                    loss=np.asarray(self.history.get("loss", []), float),
                    **{f"task_{key}": value for key, value in task.items()})

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save`."""
        from .data import load_arrays

        arrays = load_arrays(path, ("m", "n", "I", "b", "readout", "accuracy", "loss", "train_time"),
                             what="a trained task network (see save)")
        task_fields = {key[5:]: value for key, value in arrays.items() if key.startswith("task_")}
        task_fields = {key: (tuple(float(c) for c in value) if key == "coherences" else value.item())
                       for key, value in task_fields.items()}
        task = CDDMTask(**task_fields)
        network = LowRankRNN(arrays["m"], arrays["n"], arrays["I"], arrays["b"], tau=task.tau)
        return cls(network, arrays["readout"], task, float(arrays["accuracy"]), {"loss": list(arrays["loss"])},
                   float(arrays["train_time"]))


def readout_of(network, readout, inputs, dt):
    """Readout z_t = w^T phi(x_t) / N of the network on ``inputs`` (from x_0 = 0), shape (n_trials, T).

    Simulated with :func:`connector_sim.simulate` (the latent path); frame t
    is x_t, driven by u_0 .. u_{t-1}.
    """
    from .simulate import simulate

    inputs = np.asarray(inputs, dtype=np.float64)
    result = simulate(network, inputs=inputs[:, :-1], dt=dt, record_units="all")
    return result.rates @ np.asarray(readout, np.float64) / network.n_neurons


def accuracy_of(network, readout, trials, dt):
    """Fraction of trials whose mean readout over the decision steps has the target's sign."""
    z = readout_of(network, readout, trials.inputs, dt)
    return float(np.mean(np.sign(z[:, trials.decision_mask].mean(axis=1)) == trials.targets))


def train_cddm(n_neurons=512, *, task=None, n_iterations=600, batch_size=64, learning_rate=1e-2,
               target_accuracy=0.98, n_test=1000, device="auto", n_threads=1, verbose=0, random_state=0):
    """Train a rank-1 lrRNN on the context-dependent decision task by BPTT.

    Parameters (all learned, b = 0): m, n (N x 1), I (N x 4), readout w (N,),
    initialised from N(0, 1); Adam with gradient clipping (norm 1) on the
    mean squared error of z_t = w^T phi(x_t) / N to sign(s_cued) over the
    decision steps, with fresh trials every iteration. Training stops early
    once a training batch reaches ``target_accuracy``, checked on 512 fresh
    trials.

    Parameters
    ----------
    n_neurons : int, default=512
    task : CDDMTask, optional
    n_iterations : int, default=600
    batch_size : int, default=64
    learning_rate : float, default=1e-2
    target_accuracy : float, default=0.98
    n_test : int, default=1000
        Fresh trials for the reported accuracy (simulated by the package's
        simulator, float64).
    device : str, default="auto"
    n_threads : int or None, default=1
    verbose : int, default=0
        Print every ``verbose`` iterations.
    random_state : None, int or numpy.random.Generator, default=0

    Returns
    -------
    TrainedCDDM
    """
    from .inference.lint import resolve_device, torch, torch_threads

    task = (task or CDDMTask()).validate()
    N = check_int(n_neurons, "n_neurons", minimum=2, owner="train_cddm")
    n_iterations = check_int(n_iterations, "n_iterations", minimum=1, owner="train_cddm")
    batch_size = check_int(batch_size, "batch_size", minimum=1, owner="train_cddm")
    learning_rate = check_positive_scalar(learning_rate, "learning_rate", owner="train_cddm")
    n_threads = check_n_threads(n_threads, "train_cddm", allow_none=True)
    rng = check_random_state(random_state)
    device = resolve_device(device)
    alpha = task.alpha
    started = time.perf_counter()
    with torch_threads(n_threads):
        def tensor(a):
            return torch.tensor(a, dtype=torch.float32, device=device)

        params = {
            "m": tensor(rng.standard_normal((N, 1))),
            "n": tensor(rng.standard_normal((N, 1))),
            "I": tensor(rng.standard_normal((N, 4))),
            "w": tensor(rng.standard_normal(N)),
        }
        for value in params.values():
            value.requires_grad_(True)
        optimizer = torch.optim.Adam(list(params.values()), lr=learning_rate)
        history = {"iteration": [], "loss": [], "accuracy": []}

        def run(inputs):
            """Readout (B, T) by the latent recursion from kappa_0 = 0, v_0 = 0."""
            p = params
            B, T, _ = inputs.shape
            kappa = inputs.new_zeros((B, 1))
            v = inputs.new_zeros((B, 4))
            outputs = []
            for t in range(T):
                r = torch.tanh(kappa @ p["m"].T + v @ p["I"].T)
                outputs.append(r @ p["w"] / N)
                kappa = (1 - alpha) * kappa + (alpha / N) * (r @ p["n"])
                v = (1 - alpha) * v + alpha * inputs[:, t]
            return torch.stack(outputs, dim=1)

        for iteration in range(1, n_iterations + 1):
            trials = cddm_trials(batch_size, task, rng)
            inputs, targets = tensor(trials.inputs), tensor(trials.targets)
            mask = torch.as_tensor(trials.decision_mask, device=device)
            optimizer.zero_grad(set_to_none=True)
            z = run(inputs)[:, mask]
            loss = ((z - targets[:, None]) ** 2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            optimizer.step()
            batch_accuracy = float((torch.sign(z.mean(dim=1)) == targets).float().mean())
            history["iteration"].append(iteration)
            history["loss"].append(loss.item())
            history["accuracy"].append(batch_accuracy)
            if verbose and iteration % verbose == 0:
                print(f"[train_cddm] iteration {iteration:5d}  loss {loss.item():.4f}  accuracy {batch_accuracy:.3f}",
                      flush=True)
            if batch_accuracy >= target_accuracy:
                with torch.no_grad():
                    check = cddm_trials(512, task, rng)
                    z_check = run(tensor(check.inputs))[:, torch.as_tensor(check.decision_mask, device=device)]
                    correct = torch.sign(z_check.mean(dim=1)) == tensor(check.targets)
                    if float(correct.float().mean()) >= target_accuracy:
                        break
        host = {name: value.detach().cpu().numpy().astype(np.float64) for name, value in params.items()}
    network = LowRankRNN(host["m"], host["n"], host["I"], None, tau=task.tau)
    test = cddm_trials(n_test, task, rng)
    accuracy = accuracy_of(network, host["w"], test, task.dt)
    return TrainedCDDM(network, host["w"], task, accuracy, history, time.perf_counter() - started)


def cddm_dataset(trained, n_trials=200, *, random_state=None, noise_std=0.0):
    """Rates and inputs of a trained network on fresh trials: a data set with inputs for LINT.

    Parameters
    ----------
    trained : TrainedCDDM
    n_trials : int, default=200
    random_state : None, int or numpy.random.Generator
    noise_std : float, default=0
        Standard deviation of Gaussian observation noise added to the rates.

    Returns
    -------
    data : connector_sim.data.TrialData
        ``spikes`` = rates phi(x_t) (n_trials, T, N), ``inputs`` u_t (n_trials, T, 4),
        ``dt`` = task.dt.
    trials : CDDMTrials
    kappa : ndarray of shape (n_trials, T, 1)
        The network's latents (ground truth).
    """
    from .data import as_trial_data
    from .simulate import simulate

    rng = check_random_state(random_state)
    trials = cddm_trials(n_trials, trained.task, rng)
    result = simulate(trained.network, inputs=trials.inputs[:, :-1], dt=trained.task.dt, record_units="all")
    rates = result.rates.astype(np.float64)
    if noise_std:
        rates = rates + noise_std * rng.standard_normal(rates.shape)
    data = as_trial_data(rates, trials.inputs, dt=trained.task.dt)
    return data, trials, result.kappa


def main(argv=None):
    """Command line: ``python -m connector_sim.tasks train --out cddm.npz``."""
    parser = argparse.ArgumentParser(prog="python -m connector_sim.tasks",
                                     description="Train the context-dependent decision-making lrRNN.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a rank-1 network and save it (.npz)")
    train.add_argument("--out", required=True, help="output file (.npz)")
    train.add_argument("--n-neurons", type=int, default=512)
    train.add_argument("--n-iterations", type=int, default=600)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--learning-rate", type=float, default=1e-2)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.add_argument("--verbose", type=int, default=50)
    evaluate = commands.add_parser("evaluate", help="accuracy of a saved network on fresh trials")
    evaluate.add_argument("path")
    evaluate.add_argument("--n-trials", type=int, default=1000)
    evaluate.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "train":
        trained = train_cddm(args.n_neurons, n_iterations=args.n_iterations, batch_size=args.batch_size,
                             learning_rate=args.learning_rate, device=args.device, verbose=args.verbose,
                             random_state=args.seed)
        trained.save(args.out)
        print(f"accuracy {trained.accuracy:.4f} on 1000 fresh trials after {len(trained.history['loss'])} "
              f"iterations ({trained.train_time:.1f} s); saved {args.out}")
        return 0 if trained.accuracy >= 0.95 else 1
    trained = TrainedCDDM.load(args.path)
    accuracy = accuracy_of(trained.network, trained.readout, cddm_trials(args.n_trials, trained.task, args.seed),
                           trained.task.dt)
    print(f"accuracy {accuracy:.4f} on {args.n_trials} fresh trials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
