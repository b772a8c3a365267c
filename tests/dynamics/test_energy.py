"""Energies of the symmetric variants and the regularizers E-single, E-multi, Spec (exact on tiny inputs)."""

from __future__ import annotations

import pytest
import torch

from dynascope.dynamics.layers import MultiHeadSelfAttention
from dynascope.dynamics.models import ModelConfig, SymmetricItrSA, build_model
from dynascope.dynamics.regularizers import e_multi_penalty, e_single_penalty, regularizer, spec_penalty
from dynascope.errors import ConfigError


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q


@pytest.mark.parametrize(("model", "heads", "norm"), [("sym_single", 1, "pi_token"), ("sym_multi", 2, "none")])
def test_symmetric_energy_decreases_along_small_steps(model: str, heads: int, norm: str) -> None:
    """E_single with Π (Prop. 4.1) and E_multi without norm (Prop. 4.2) fall at every small step (C = 0)."""
    torch.manual_seed(0)
    m = build_model(ModelConfig(model=model, width=8, heads=heads, norm=norm, eta=1e-3)).double()
    assert isinstance(m, SymmetricItrSA)
    with torch.no_grad():
        x = m.norm(torch.randn(2, 81, 8, dtype=torch.float64))
        c = torch.zeros_like(x)
        energies = [m.energy(x)]
        for _ in range(30):
            x = m.step(x, c)
            energies.append(m.energy(x))
    e = torch.stack(energies)  # [31, 2]
    assert (e[1:] < e[:-1]).all()
    assert float((e[0] - e[-1]).min()) > 0


def test_energy_is_a_gradient_potential_of_the_symmetric_attention() -> None:
    """For one head, −∂E/∂x_i = Z_i · SA(X)_i with Z_i = Σ_j exp(β x_iᵀAx_j): the flow is a rescaled gradient."""
    torch.manual_seed(1)
    m = build_model(ModelConfig(model="sym_single", width=8, heads=1, norm="none")).double()
    x = torch.randn(1, 81, 8, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(m.energy(x).sum(), x)
    wq = m.msa.query_weights()[0]
    q = x @ wq
    z = torch.exp(m.msa.beta * q @ q.transpose(-1, -2)).sum(-1, keepdim=True)
    assert torch.allclose(-grad, z * m.msa(x), rtol=1e-10, atol=1e-10)


def test_multi_head_subspaces_are_orthogonal() -> None:
    m = build_model(ModelConfig(model="sym_multi", width=8, heads=2, norm="none")).double()
    a0, a1 = (w @ w.T for w in m.msa.query_weights())
    # the orthogonal parametrization was built in float32, so orthogonality holds to float32 precision
    assert float((a0 @ a1).abs().max()) < 1e-6 * float(a0.abs().max() * a1.abs().max())
    assert torch.allclose(a0, a0.T)


def _set_msa(msa: MultiHeadSelfAttention, wq, wk, wv, wo, biases: float = 0.0) -> None:
    """Write weights given in the paper's layout (W_paper = weight.T)."""
    with torch.no_grad():
        for lin, w in ((msa.wq, wq), (msa.wk, wk), (msa.wv, wv), (msa.wo, wo)):
            lin.weight.copy_(w.T)
            lin.bias.fill_(biases)


def test_spec_zero_iff_unit_top_singular_values_and_zero_biases() -> None:
    msa = MultiHeadSelfAttention(6, 2).double()
    ws = [_orthogonal(6, s) for s in range(4)]
    ws[1] = ws[1] @ torch.diag(torch.tensor([1.0, 0.5, 0.2, 0.9, 0.1, 1.0], dtype=torch.float64))  # σ_max 1
    _set_msa(msa, *ws)
    value = spec_penalty(msa.weights().values(), msa.biases().values())
    assert abs(float(value)) < 1e-24 + 1e-12
    _set_msa(msa, ws[0] * 1.1, *ws[1:])
    value = spec_penalty(msa.weights().values(), msa.biases().values())
    assert abs(float(value) - (1.21 - 1.0) ** 2) < 1e-12
    _set_msa(msa, *ws, biases=0.5)  # four biases of norm² 6·0.25 = 1.5
    value = spec_penalty(msa.weights().values(), msa.biases().values())
    assert abs(float(value) - 4 * 1.5**2) < 1e-12


def test_spec_gradient_matches_finite_differences() -> None:
    torch.manual_seed(3)
    w = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(5, 3, dtype=torch.float64)

    def value(w: torch.Tensor, b: torch.Tensor) -> float:
        with torch.no_grad():
            return float(spec_penalty([w, w2], [b]))

    gw, gb = torch.autograd.grad(spec_penalty([w, w2], [b]), (w, b))
    eps = 1e-6
    for i in range(5):
        for j in range(5):
            e = torch.zeros(5, 5, dtype=torch.float64)
            e[i, j] = eps
            fd = (value(w + e, b) - value(w - e, b)) / (2 * eps)
            assert abs(fd - float(gw[i, j])) < 1e-5 * max(1.0, abs(fd))
        e = torch.zeros(5, dtype=torch.float64)
        e[i] = eps
        fd = (value(w, b + e) - value(w, b - e)) / (2 * eps)
        assert abs(fd - float(gb[i])) < 1e-5 * max(1.0, abs(fd))


def test_e_multi_zero_for_symmetric_heads_and_brute_force_otherwise() -> None:
    d, heads = 6, 3
    msa = MultiHeadSelfAttention(d, heads).double()
    gen = torch.Generator().manual_seed(5)
    wv = torch.randn(d, d, generator=gen, dtype=torch.float64)
    _set_msa(msa, wv, wv, wv, wv.T)  # W^O_h = (W^V_h)ᵀ → W^V_h W^O_h symmetric
    assert float(e_multi_penalty(msa.value_output())) < 1e-24
    wo = torch.randn(d, d, generator=gen, dtype=torch.float64)
    _set_msa(msa, wv, wv, wv, wo)
    brute = 0.0
    dh = d // heads
    for h in range(heads):
        for i in range(d):
            for j in range(d):
                mij = sum(float(wv[i, h * dh + k] * wo[h * dh + k, j]) for k in range(dh))
                mji = sum(float(wv[j, h * dh + k] * wo[h * dh + k, i]) for k in range(dh))
                brute += (mij - mji) ** 2
    assert abs(float(e_multi_penalty(msa.value_output())) - brute) < 1e-9 * brute


def test_e_single_zero_at_the_prop_4_1_condition() -> None:
    gen = torch.Generator().manual_seed(6)
    wq, wk = (torch.randn(5, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    a = wq @ wk.T
    eye = torch.eye(5, dtype=torch.float64)
    assert float(e_single_penalty(wq, wk, 0.5 * (a + a.T), eye)) < 1e-24
    wv = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    expected = float(((wv - 0.5 * (a + a.T)) ** 2).sum())
    assert abs(float(e_single_penalty(wq, wk, wv, eye)) - expected) < 1e-10


def test_regularizer_on_models() -> None:
    torch.manual_seed(0)
    ortho = build_model(ModelConfig(model="itrsa", width=8, heads=2, orthogonal_vo=True))
    wv, wo = ortho.msa.weights()["wv"], ortho.msa.weights()["wo"]
    assert torch.allclose(wv @ wv.T, torch.eye(8), atol=1e-5)
    assert torch.allclose(wo @ wo.T, torch.eye(8), atol=1e-5)
    r = regularizer(ortho, "e_multi")
    r.backward()
    assert float(r) > 0
    single = build_model(ModelConfig(model="itrsa", width=8, heads=1))
    assert float(regularizer(single, "e_single")) > 0
    assert float(regularizer(single, "spec")) > 0
    assert float(regularizer(single, "none")) == 0.0
    with pytest.raises(ConfigError):
        regularizer(ortho, "e_single")
    with pytest.raises(ConfigError):
        regularizer(build_model(ModelConfig(model="sym_multi", width=8, heads=2, norm="none")), "e_multi")
