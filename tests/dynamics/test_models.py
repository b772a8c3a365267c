"""Looped SA models: shapes, normalization conventions, the Prop. 5.1 bound, Omega / Proj, config checks."""

from __future__ import annotations

import math

import pytest
import torch

from dynascope.dynamics.analyze import AnalysisConfig, analyze_model, null_dims
from dynascope.dynamics.jacobian import step_jacobian
from dynascope.dynamics.layers import Omega, StateNorm, oscillator_blocks, sphere_normalize, tangent_project
from dynascope.dynamics.models import ModelConfig, build_model
from dynascope.dynamics.spectral import normalization_bound
from dynascope.errors import ConfigError

ALL = [
    ModelConfig(model="itrsa", width=8, heads=2, osc_size=4, norm="none"),
    ModelConfig(model="itrsa", width=8, heads=2, osc_size=4, norm="pi_token"),
    ModelConfig(model="itrsa", width=8, heads=2, osc_size=4, norm="rms_token"),
    ModelConfig(model="itrsa", width=8, heads=2, osc_size=4, norm="rms_osc"),
    ModelConfig(model="akorn", width=8, heads=2, osc_size=4, norm="pi_osc"),
    ModelConfig(model="akorn", width=8, heads=2, osc_size=4, norm="rms_osc"),
    ModelConfig(model="sym_single", width=8, heads=1, osc_size=4, norm="pi_token"),
    ModelConfig(model="sym_multi", width=8, heads=2, osc_size=4, norm="none"),
]


def _puzzles(batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (batch, 81), generator=gen)


@pytest.mark.parametrize("config", ALL, ids=lambda c: f"{c.model}-{c.norm}")
def test_shapes_and_trajectory(config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(config)
    puzzles = _puzzles(3)
    c = model.conditioning(puzzles)
    x = model.init_state(puzzles, torch.Generator().manual_seed(1))
    assert c.shape == x.shape == (3, 81, 8)
    assert model.step(x, c).shape == (3, 81, 8)
    assert model.drive(x, c).shape == (3, 81, 8)
    logits, states = model(puzzles, 5, return_trajectory=True, generator=torch.Generator().manual_seed(1))
    assert logits.shape == (3, 81, 9)
    assert len(states) == 6
    assert torch.equal(states[0], x)
    assert torch.allclose(states[1], model.step(x, c))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("config", [c for c in ALL if c.norm != "none"], ids=lambda c: f"{c.model}-{c.norm}")
def test_normalised_states_have_unit_blocks_times_gamma(config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(config)
    if model.norm.gamma is not None:
        with torch.no_grad():
            model.norm.gamma.copy_(torch.rand(8) + 0.5)
    puzzles = _puzzles(2)
    c = model.conditioning(puzzles)
    x = model.init_state(puzzles)
    for _ in range(3):
        x = model.step(x, c)
        unit = x / model.norm.gamma if model.norm.gamma is not None else x
        norms = oscillator_blocks(unit, model.norm.block).norm(dim=-1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_init_state_keeps_givens_and_noises_blanks() -> None:
    model = build_model(ModelConfig(model="itrsa", width=8, heads=2, norm="none"))
    puzzles = _puzzles(2)
    c = model.conditioning(puzzles)
    x = model.init_state(puzzles, torch.Generator().manual_seed(3))
    given = puzzles != 0
    assert torch.equal(x[given], c[given])
    assert not torch.allclose(x[~given], c[~given])
    again = model.init_state(puzzles, torch.Generator().manual_seed(3))
    assert torch.equal(x, again)


def test_cells_have_identity() -> None:
    """With every cell blank the conditioning still differs across all 81 cells (row/col/box embeddings)."""
    model = build_model(ModelConfig(width=8, heads=2))
    c = model.conditioning(torch.zeros(1, 81, dtype=torch.long))[0]
    distances = torch.cdist(c, c) + torch.eye(81)
    assert distances.min() > 1e-4


def test_rmsnorm_convention_vs_torch() -> None:
    """Paper's RMSNorm = unit norm × γ = torch.nn.RMSNorm / sqrt(D) (note §1.2)."""
    y = torch.randn(5, 81, 16, dtype=torch.float64)
    ours = StateNorm("rms_token", 16, 16, eps=1e-12).double()(y)
    theirs = torch.nn.RMSNorm(16, eps=1e-20, dtype=torch.float64)(y)
    assert torch.allclose(ours * 16**0.5, theirs, atol=1e-10)


def test_sphere_normalize_and_projection() -> None:
    y = torch.randn(3, 7, 8, dtype=torch.float64)
    x = sphere_normalize(torch.randn(3, 7, 8, dtype=torch.float64), 4, eps=0.0)
    p = tangent_project(y, x, 4, eps=0.0)
    inner = (oscillator_blocks(p, 4) * oscillator_blocks(x, 4)).sum(-1)
    assert inner.abs().max() < 1e-12
    # projecting twice changes nothing, and the normal component is what was removed
    assert torch.allclose(tangent_project(p, x, 4, eps=0.0), p, atol=1e-12)


def test_omega_is_antisymmetric_rotation() -> None:
    omega = Omega(init_omg=0.7).double()
    assert abs(float(omega.omega()) - 0.7) < 1e-7
    x = torch.randn(4, 8, dtype=torch.float64)
    assert (x * omega(x)).sum(-1).abs().max() < 1e-12
    M = torch.func.jacrev(omega)(torch.zeros(8, dtype=torch.float64))
    assert torch.allclose(M, -M.T)
    eig = torch.linalg.eigvals(M)
    assert torch.allclose(eig.real, torch.zeros(8, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(eig.imag.abs(), torch.full((8,), 0.7, dtype=torch.float64), atol=1e-7)


@pytest.mark.parametrize("norm", ["rms_token", "rms_osc", "pi_token"])
def test_normalization_bound_holds_on_random_states(norm: str) -> None:
    """Prop. 5.1: ‖∂Norm(X + η(C + MSA(X)))/∂X‖₂ ≤ γ_max/R (1 + η‖J_MSA‖₂), with exact dense norms."""
    for seed in range(4):
        torch.manual_seed(seed)
        model = build_model(ModelConfig(model="itrsa", width=8, heads=2, osc_size=4, norm=norm)).double()
        with torch.no_grad():
            model.eta.fill_(0.3 + seed)
            if model.norm.gamma is not None:
                model.norm.gamma.copy_(torch.randn(8, dtype=torch.float64))
            for p in model.msa.parameters():
                p.mul_(1.0 + seed)
        puzzles = _puzzles(1, seed)
        c = model.conditioning(puzzles)
        x0 = torch.randn(1, 81, 8, dtype=torch.float64) * (1 + seed)

        def step(x: torch.Tensor, c: torch.Tensor = c, model=model) -> torch.Tensor:
            return model.step(x.reshape(1, 81, 8), c).reshape(-1)

        def msa(x: torch.Tensor, model=model) -> torch.Tensor:
            return model.msa(x.reshape(1, 81, 8)).reshape(-1)

        x = x0.reshape(-1).detach()
        measured = float(torch.linalg.matrix_norm(step_jacobian(step, x), ord=2))
        j_msa = float(torch.linalg.matrix_norm(step_jacobian(msa, x), ord=2))
        with torch.no_grad():
            y = x0 + model.eta * model.drive(x0, c)
            radius = float(oscillator_blocks(y, model.norm.block).norm(dim=-1).min())
        bound = normalization_bound(model.norm.gamma_max(), radius, float(model.eta), j_msa)
        assert measured <= bound * (1 + 1e-9)
        assert measured > 0


def test_analysis_on_tiny_model() -> None:
    """The glue: bound holds on the real state, exact Lyapunov leaves exactly S·D/N null exponents out."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(model="itrsa", width=8, heads=2, osc_size=4, norm="rms_osc"))
    config = AnalysisConfig(boards=1, t_jacobian=3, lyap_steps=3, trace_steps=4, ci_times=(0, 4))
    result = analyze_model(model, _puzzles(1), config)
    board = result["boards"][0]
    assert result["null_dims"] == null_dims(model) == 81 * 2
    assert board["lyapunov"]["method"] == "exact"
    assert board["lyapunov"]["unresolved"] == 81 * 2
    assert board["eigenvalues"]["count"] == 648
    assert board["normalization_bound"]["holds"]
    assert len(board["pseudo_energy"]) == 5 and len(board["cos_msa_jx"]) == 5
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in board["contribution_index"].values())
    # the dense eigenvalues are those of the Jacobian: max |λ| ≤ ‖J‖₂
    assert board["max_abs_eigenvalue"] <= board["spectral_norm"]["value"] * (1 + 1e-6)


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "nope"},
        {"norm": "layer"},
        {"width": 10, "heads": 4},
        {"width": 8, "osc_size": 3},
        {"model": "akorn", "norm": "rms_token"},
        {"model": "akorn", "norm": "pi_osc", "width": 9, "heads": 1, "osc_size": 3},
        {"model": "sym_single", "heads": 2},
        {"eta": 0.0},
        {"digit_std": 0.0},
    ],
)
def test_config_validation(fields: dict) -> None:
    with pytest.raises(ConfigError):
        ModelConfig(**{"width": 8, "heads": 2, **fields})


def test_digit_std_scales_the_digit_embedding_and_leaves_every_other_weight() -> None:
    torch.manual_seed(3)
    base = build_model(ModelConfig(model="akorn", width=8, heads=2, osc_size=4, norm="pi_osc"))
    torch.manual_seed(3)
    small = build_model(ModelConfig(model="akorn", width=8, heads=2, osc_size=4, norm="pi_osc", digit_std=0.25))
    for (name, a), (_, b) in zip(base.state_dict().items(), small.state_dict().items(), strict=True):
        torch.testing.assert_close(b, 0.25 * a if name == "digit.weight" else a, rtol=0, atol=0, msg=name)
    assert 0.8 < float(base.digit.weight.detach().std()) < 1.2  # the default is torch's N(0, 1)


def test_update_rules_match_the_paper() -> None:
    """ItrSA: Norm(X + η(C + MSA(X))); AKOrN: Π_osc(X + η(ΩX + Proj_X(C + MSA(X)))), from the components."""
    torch.manual_seed(0)
    puzzles = _puzzles(2)
    itrsa = build_model(ModelConfig(model="itrsa", width=8, heads=2, norm="rms_token")).double()
    c = itrsa.conditioning(puzzles)
    x = itrsa.init_state(puzzles)
    y = x + itrsa.eta * (c + itrsa.msa(x))
    expected = y / y.norm(dim=-1, keepdim=True) * itrsa.norm.gamma
    assert torch.allclose(itrsa.step(x, c), expected, atol=1e-12)

    akorn = build_model(ModelConfig(model="akorn", width=8, heads=2, osc_size=4, norm="pi_osc")).double()
    c = akorn.conditioning(puzzles)
    x = akorn.init_state(puzzles)
    drive = (c + akorn.msa(x)).reshape(2, 81, 2, 4)
    xb = x.reshape(2, 81, 2, 4)
    proj = drive - (drive * xb).sum(-1, keepdim=True) * xb
    pairs = x.reshape(2, 81, 4, 2)
    omega_x = akorn.omega.omega() * torch.stack((pairs[..., 1], -pairs[..., 0]), -1).reshape(2, 81, 8)
    y = (x + akorn.eta * (omega_x + proj.reshape(2, 81, 8))).reshape(2, 81, 2, 4)
    expected = (y / y.norm(dim=-1, keepdim=True)).reshape(2, 81, 8)
    assert torch.allclose(akorn.step(x, c), expected, atol=1e-12)


def test_analysis_reports_divergence_instead_of_failing() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(model="itrsa", width=8, heads=2, norm="none"))
    with torch.no_grad():
        model.eta.fill_(1e38)  # the analysis runs in float64: the state grows ~1e38× per step and overflows
    config = AnalysisConfig(boards=1, t_jacobian=12, lyap_steps=12, trace_steps=12, ci_times=(0,))
    board = analyze_model(model, _puzzles(1), config)["boards"][0]
    assert board["diverged_at"] is not None and board["diverged_at"] <= 12
    assert board["lyapunov"]["method"].startswith("none")


def test_mean_exponent_is_exact_where_the_product_cannot_resolve_single_exponents() -> None:
    """A linear no-norm step J = I − 0.999·(P ⊗ I) with uniform attention P = 11ᵀ/81: exponents are 0
    (80·D times) and ln 0.001 (D times). The exact product cannot resolve ln 0.001 over 16 steps (−inf in the
    spectrum); the mean, accumulated as a volume through per-step QRs, is still the exact ln(0.001)/81."""
    model = build_model(ModelConfig(model="itrsa", width=4, heads=1, osc_size=4, norm="none"))
    with torch.no_grad():
        for lin in (model.msa.wq, model.msa.wk, model.msa.wv, model.msa.wo):
            lin.weight.zero_()
            lin.bias.zero_()
        model.msa.wv.weight.copy_(torch.eye(4))
        model.msa.wo.weight.copy_(-0.999 * torch.eye(4))
    config = AnalysisConfig(boards=1, t_jacobian=2, lyap_steps=16, trace_steps=2, ci_times=(0,))
    lyap = analyze_model(model, _puzzles(1), config)["boards"][0]["lyapunov"]
    assert lyap["unresolved"] >= 4 and lyap["null_dims"] == 0 and lyap["mean_over"] == 81 * 4
    assert abs(lyap["max"]) < 1e-9
    shrink = 1.0 - float(torch.tensor(0.999, dtype=torch.float32))  # the weights are float32
    assert abs(lyap["mean"] - math.log(shrink) / 81) < 1e-9
