"""Perturbations (silencing, clamping) in simulation and mean field, and the study runner."""

import numpy as np
import pytest

from connector_sim import (
    Gaussian,
    Perturbation,
    PerturbationTable,
    find_fixed_points,
    latent_flow,
    perturbation_study,
    perturbed_flow,
    simulate,
)
from connector_sim.synthetic import latent_grid, quadstable_mixture

BOX = [[-3.0, 3.0], [-3.0, 3.0]]
# Off the symmetry lines (axes, diagonals), whose points flow to saddles.
STARTS = latent_grid(4, 2.4) + [0.13, -0.07]
FEW_STARTS = dict(n_starts=30)


def rank_one(overlap, var_n=5.0):
    """Rank one, Var(m) = 1, Cov(m, n) = overlap, zero means."""
    return Gaussian([0.0, 0.0], [[1.0, overlap], [overlap, var_n]], rank=1)


def small_mixture_network(n_neurons=600, seed=3):
    return quadstable_mixture().sample(n_neurons, seed, return_labels=True)


def test_silencing_one_quadstable_type_leaves_two_attractors_in_mean_field_and_simulation():
    mixture = quadstable_mixture()
    perturbations = [Perturbation(), Perturbation.silence(cell_types=0)]
    theory = perturbation_study(mixture, perturbations, STARTS, n_steps=300, box=BOX,
                                fixed_point_options=FEW_STARTS)
    assert len(theory) == 2 * len(STARTS) and set(theory.column("method")) == {"mean field"}
    for name, n_stable in [("none", 4), ("silence cell type 0", 2)]:
        rows = theory.select(perturbation=name)
        assert set(rows.column("n_stable")) == {n_stable}
        # Every stable point attracts some start, and every run ends on one
        # (300 Euler steps at alpha = 0.1: the slowest mode, exp(-0.25 t), is at 6e-4).
        assert len(set(rows.column("attractor"))) == n_stable
        assert rows.column("attractor_distance").max() < 1e-2 and rows.column("settled").all()
    silenced = [p for p in theory.fixed_points[("silence cell type 0", -1)] if p.stable]
    np.testing.assert_allclose(np.abs([p.position for p in silenced]), 1.01348, atol=1e-5)

    # Simulation of networks sampled from the mixture, matched to each
    # network's own perturbed flow: two attractors again. Those sit at the
    # mean-field points up to the finite-N shift, rms 3.7 / sqrt(N) per point
    # (measured over 8 seeds at N = 2e3 and 2e4, max 7.8 / sqrt(N)); 15 / sqrt(N) bounds it.
    n_neurons = 4000
    sampled = perturbation_study(mixture, perturbations[1:], STARTS, seeds=[1], n_neurons=n_neurons, n_steps=300,
                                 box=BOX, reference="network", fixed_point_options=FEW_STARTS)
    assert set(sampled.column("n_stable")) == {2} and len(set(sampled.column("attractor"))) == 2
    assert sampled.column("attractor_distance").max() < 1e-2
    network_points = np.array([p.position for p in sampled.fixed_points[("silence cell type 0", 1)] if p.stable])
    shift = np.min(np.linalg.norm(network_points[:, None] - np.array([p.position for p in silenced])[None], axis=-1), axis=1)
    assert np.all(shift < 15 / np.sqrt(n_neurons))


def test_silencing_a_random_fraction_acts_as_a_smaller_overlap():
    # Silencing a random fraction f of the units removes a fraction f of the
    # sum over neurons: in mean field sigma_mn -> (1 - f) sigma_mn (and the
    # n-variance by (1 - f)^2, which does not enter the flow of a rank-one
    # zero-mean Gaussian).
    f, overlap = 0.25, 2.0
    perturbation = Perturbation.silence(fraction=f, random_state=12)
    kappa = np.linspace(-3, 3, 31)[:, None]
    np.testing.assert_allclose(perturbed_flow(rank_one(overlap), perturbation)(kappa),
                               latent_flow(rank_one((1 - f) * overlap))(kappa), rtol=0, atol=1e-13)
    theory = perturbation_study(rank_one(overlap), [perturbation], [[1.0], [-1.0]], box=[[-4, 4]])
    stable = sorted(p.position[0] for p in theory.fixed_points[(perturbation.name, -1)] if p.stable)
    np.testing.assert_allclose(stable, [-0.8434, 0.8434], atol=1e-4)
    # Simulated end states fluctuate with the sampled overlap, sd ~ 2.4 / sqrt(N)
    # (measured over 20 seeds); 12 / sqrt(N) is 5 sd. Two N show the shrink.
    for n_neurons in (4_000, 64_000):
        table = perturbation_study(rank_one(overlap), [perturbation], [[1.0], [-1.0]], seeds=[11],
                                   n_neurons=n_neurons, n_steps=300, box=[[-4, 4]])
        assert set(table.column("reference")) == {"mean field"}
        np.testing.assert_allclose(table.vectors("kappa_end")[:, 0], stable[::-1], atol=12 / np.sqrt(n_neurons))
        assert table.column("attractor_distance").max() < 12 / np.sqrt(n_neurons)


def test_silencing_for_a_window_then_releasing_returns_to_an_attractor():
    # From the unperturbed attractor on the kappa_2 axis, silencing type 0
    # for 250 steps moves the state to the silenced system's attractor at
    # (-1.01, 1.01); after the release it returns to an unperturbed attractor.
    # Tolerances: mean field, the slow approach (measured 1e-3 at step 250, and 40 tau after the release);
    # N = 3000, the finite-N shift of the attractors (15 / sqrt(N), see above).
    mixture = quadstable_mixture()
    window = Perturbation.silence(cell_types=0, stop=250)
    start = [[0.05, 1.825]]
    silenced = [p.position for p in find_fixed_points(perturbed_flow(mixture, window), BOX, **FEW_STARTS) if p.stable]
    for source, options, tolerance in [(mixture, {}, 1e-2), (mixture, dict(n_neurons=3000, seeds=[2]), 15 / np.sqrt(3000))]:
        table = perturbation_study(source, [window], start, n_steps=650, box=BOX, keep_trajectories=True,
                                   fixed_point_options=FEW_STARTS, **options)
        row = table.rows[0]
        during = table.trajectories[(0, row["seed"])][0, 250]
        assert np.min(np.linalg.norm(np.array(silenced) - during, axis=1)) < tolerance
        assert row["system"] == "unperturbed" and row["settled"] and row["n_stable"] == 4
        assert row["attractor_stability"] == "stable node" and row["attractor_distance"] < tolerance
        attractor = table.fixed_points_of(row)[row["attractor"]].position
        np.testing.assert_allclose(attractor, [0.0, 1.82507], atol=1e-4)


def test_clamping_matches_the_reference_on_every_backend(backend):
    # The same clamped recursion on every backend, full and latent paths;
    # float64 sums in different orders: 1e-12 over 40 steps.
    network, labels = small_mixture_network()
    rng = np.random.default_rng(4)
    units = rng.choice(network.n_neurons, 100, replace=False)
    perturbation = Perturbation.clamp(rng.uniform(-1, 1, 100), units, start=5, stop=30)
    clamp = perturbation.clamp_spec(network.n_neurons)
    kappa0 = STARTS[:5]
    expected = simulate(network, 40, kappa0=kappa0, clamp=clamp, backend="numpy", path="full").kappa
    for path in ("full", "latent"):
        got = simulate(network, 40, kappa0=kappa0, clamp=clamp, backend=backend, path=path).kappa
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # The perturbed flow of the network is the simulator's velocity in the window.
    inside = expected[:, 10]
    flow = perturbed_flow(network, perturbation)(inside)
    np.testing.assert_allclose(inside + 0.1 * flow, expected[:, 11], rtol=0, atol=1e-12)
    # Through the runner: silencing a cell type, batched trials.
    silence = Perturbation.silence(cell_types=[1, 2], start=3)
    tables = [perturbation_study(network, [silence], kappa0, labels=labels, n_steps=40, backend=name,
                                 keep_trajectories=True, box=BOX, fixed_point_options=dict(n_starts=5))
              for name in ("numpy", backend)]
    np.testing.assert_allclose(tables[1].trajectories[(0, 0)], tables[0].trajectories[(0, 0)], rtol=0, atol=1e-12)


def test_table_records_csv_progress_and_interrupt(tmp_path):
    network, labels = small_mixture_network(200)
    perturbations = [Perturbation(), Perturbation.silence(cell_types=3, name="no type 3")]
    calls = []
    table = perturbation_study(network, perturbations, STARTS[:3], seeds=[0, 1], labels=labels, n_steps=20,
                               box=BOX, fixed_point_options=dict(n_starts=5),
                               progress=lambda *args: calls.append(args))
    assert len(table) == 2 * 2 * 3 and not table.interrupted
    assert [call[:2] for call in calls] == [(3, 12), (6, 12), (9, 12), (12, 12)]
    assert "no type 3, seed 1" in calls[-1][2]
    records = table.to_records()
    assert records.dtype["seed"] == np.int64 and records.dtype["settled"] == bool
    assert records.dtype["kappa_end_1"] == np.float64 and list(records["perturbation"][:3]) == ["none"] * 3
    path = tmp_path / "study.csv"
    table.to_csv(path)
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == table.columns and len(lines) == 13
    assert float(lines[1].split(",")[table.columns.index("kappa_end_0")]) == table.rows[0]["kappa_end_0"]

    def interrupt(done, total, description):
        raise KeyboardInterrupt

    with pytest.warns(RuntimeWarning, match="interrupted after 3 of 12 runs"):
        partial = perturbation_study(network, perturbations, STARTS[:3], seeds=[0, 1], labels=labels, n_steps=20,
                                     box=BOX, fixed_point_options=dict(n_starts=5), progress=interrupt)
    assert isinstance(partial, PerturbationTable) and partial.interrupted and len(partial) == 3


BAD_PERTURBATIONS = [
    (Perturbation.silence([0, 600]), r"names unit 600, but the network has 600 units \(indices 0 to 599\)"),
    (Perturbation.silence(np.ones(599, bool)), r"boolean unit mask of length 599, but the network has 600 units"),
    (Perturbation.silence(cell_types=[1, 7]), r"names cell type\(s\) \[7\], which do not exist.*\[0, 1, 2, 3\]"),
]


@pytest.mark.parametrize("perturbation, message", BAD_PERTURBATIONS)
def test_perturbations_naming_missing_units_are_rejected(perturbation, message):
    network, labels = small_mixture_network()
    with pytest.raises(ValueError, match=message):
        simulate(network, 5, clamp=perturbation.clamp_spec(network.n_neurons, labels))
    with pytest.raises(ValueError, match=message):
        perturbed_flow(network, perturbation, labels=labels)
    with pytest.raises(ValueError, match=message):
        perturbation_study(network, [perturbation], [0.0, 0.0], labels=labels, n_steps=5)


def test_bad_perturbations_say_what_was_expected():
    network, labels = small_mixture_network()
    with pytest.raises(ValueError, match=r"names cell types \[0\]; give the cell type of each neuron with labels="):
        perturbed_flow(network, Perturbation.silence(cell_types=0))
    with pytest.raises(ValueError, match=r"names cell type\(s\) \[4\].*components \[0, 1, 2, 3\]"):
        perturbed_flow(quadstable_mixture(), Perturbation.silence(cell_types=4))
    with pytest.raises(ValueError, match="names units by index, but a GaussianMixture has no units"):
        perturbed_flow(quadstable_mixture(), Perturbation.silence([1, 2]))
    with pytest.raises(ValueError, match="selects its units one way.*Got units and cell_types"):
        Perturbation.silence([1], cell_types=0)
    with pytest.raises(ValueError, match=r"Per-unit clamp values need the units given explicitly"):
        Perturbation.clamp([0.1, 0.2], cell_types=0)
    with pytest.raises(ValueError, match=r"one value per clamped unit \(3\). Got 2 values"):
        Perturbation.clamp([0.1, 0.2], [0, 1, 2])
    with pytest.raises(ValueError, match=r"fraction must be a number in \[0, 1\]"):
        Perturbation.silence(fraction=1.5)
    with pytest.raises(ValueError, match=r"units must be indices >= 0. Got -1"):
        Perturbation.silence([-1, 2])
    with pytest.raises(ValueError, match=r"'stop' parameter of Perturbation must be an int in the range \[4, inf\]"):
        Perturbation.silence([1], start=3, stop=2)
    with pytest.raises(ValueError, match=r"names must be distinct.*\['none'\]"):
        perturbation_study(network, [Perturbation(), Perturbation()], [0.0, 0.0], n_steps=5)
    with pytest.raises(ValueError, match=r"initial_conditions must have shape \(any, 2\)"):
        perturbation_study(network, [Perturbation()], [0.0, 0.0, 0.0], n_steps=5)
    with pytest.raises(ValueError, match="n_neurons samples networks from a distribution"):
        perturbation_study(network, [Perturbation()], [0.0, 0.0], n_neurons=10)
    with pytest.raises(TypeError, match="perturbation_study needs a LowRankRNN.*or the path of a saved network"):
        perturbation_study(42, [Perturbation()], [0.0, 0.0])
    # A str is the path of a saved network; one that names no file says so.
    with pytest.raises(FileNotFoundError, match=r"given the path 'network', which is not an existing file.*"
                                                r"save_network"):
        perturbation_study("network", [Perturbation()], [0.0, 0.0])


def test_the_study_checks_every_perturbation_before_running():
    calls = []
    with pytest.raises(ValueError, match=r"names cell type\(s\) \[9\].*components \[0, 1, 2, 3\]"):
        perturbation_study(quadstable_mixture(), [Perturbation(), Perturbation.silence(cell_types=9)], [0.1, 0.2],
                           n_neurons=100, progress=lambda *args: calls.append(args))
    with pytest.raises(ValueError, match=r"names unit 100, but the network has 100 units"):
        perturbation_study(quadstable_mixture(), [Perturbation(), Perturbation.silence([100])], [0.1, 0.2],
                           n_neurons=100, progress=lambda *args: calls.append(args))
    with pytest.raises(ValueError, match="names units by index, which the mean field cannot express"):
        perturbation_study(quadstable_mixture(), [Perturbation.silence([1])], [0.1, 0.2], n_neurons=100,
                           reference="mean field")
    assert calls == []
