"""Losses against torch.nn.functional in float64: the value and the gradient (by autograd)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.losses import log_softmax, mse, sigmoid_binary_cross_entropy, softmax, softmax_cross_entropy

TOL = 1e-10


def torch_loss_and_grad(fn, x, *args, **kwargs):
    xt = torch.tensor(x, requires_grad=True)
    loss = fn(xt, *args, **kwargs)
    loss.backward()
    return loss.item(), xt.grad.numpy()


@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 6), (2, 3, 2, 4)])
def test_cross_entropy_matches_torch(shape):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(shape) * 3
    targets = rng.integers(0, shape[-1], shape[:-1])
    loss, d = softmax_cross_entropy(logits, targets)
    # torch wants the class axis second: (N, C, d1, ...)
    ref, dref = torch_loss_and_grad(
        lambda z: F.cross_entropy(z.movedim(-1, 1) if z.ndim > 2 else z, torch.from_numpy(targets)), logits)
    assert isinstance(loss, float)
    assert abs(loss - ref) < TOL
    assert np.abs(d - dref).max() < TOL


def test_cross_entropy_ignore_index_and_mask_match_torch():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 6, 5)) * 2
    targets = rng.integers(0, 5, (4, 6))
    targets[0, 4:] = -1                      # padding marked with a custom ignore index
    targets[2, 1] = -1
    loss, d = softmax_cross_entropy(logits, targets, ignore_index=-1)
    ref, dref = torch_loss_and_grad(
        lambda z: F.cross_entropy(z.movedim(-1, 1), torch.from_numpy(targets), ignore_index=-1), logits)
    assert abs(loss - ref) < TOL and np.abs(d - dref).max() < TOL
    assert np.all(d[0, 4:] == 0)
    # a mask gives the same as marking the masked positions ignored
    mask = targets != -1
    clean = np.where(mask, targets, 0)
    loss_m, d_m = softmax_cross_entropy(logits, clean, mask=mask)
    assert abs(loss_m - ref) < TOL and np.abs(d_m - dref).max() < TOL
    loss_f, _ = softmax_cross_entropy(logits, clean, mask=mask.astype(np.float32))
    assert loss_f == loss_m


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [-5e4, 5e4, 5e4]])
    targets = np.array([1, 2])
    loss, d = softmax_cross_entropy(logits, targets)
    ref, dref = torch_loss_and_grad(F.cross_entropy, logits, torch.from_numpy(targets))
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert abs(loss - ref) < TOL * abs(ref) and np.abs(d - dref).max() < TOL


def test_cross_entropy_float32_stays_float32():
    rng = np.random.default_rng(2)
    loss, d = softmax_cross_entropy(rng.standard_normal((3, 4)).astype(np.float32), np.array([0, 1, 3]))
    assert d.dtype == np.float32 and isinstance(loss, float)


def test_cross_entropy_errors():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="every position is masked or ignored"):
        softmax_cross_entropy(z, np.array([-100, -100]))
    with pytest.raises(ValueError, match="every position"):
        softmax_cross_entropy(z, np.array([0, 1]), mask=np.zeros(2))
    with pytest.raises(ValueError, match=r"targets: expected class ids in 0..2"):
        softmax_cross_entropy(z, np.array([0, 3]))
    with pytest.raises(TypeError, match="targets: expected integer"):
        softmax_cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"targets: expected shape \(2,\)"):
        softmax_cross_entropy(z, np.array([[0, 1]]))
    with pytest.raises(ValueError, match="mask: expected only 0 and 1"):
        softmax_cross_entropy(z, np.array([0, 1]), mask=np.array([0.5, 1]))
    with pytest.raises(ValueError, match=r"mask: expected shape"):
        softmax_cross_entropy(z, np.array([0, 1]), mask=np.ones(3))
    with pytest.raises(TypeError, match="logits"):
        softmax_cross_entropy(np.array([["a", "b"]]), np.array([0]))


def test_bce_matches_torch_including_extreme_logits():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((5, 4, 3)) * 4
    logits[0, 0, :] = [800.0, -800.0, 40.0]       # exp would overflow in a naive formula
    targets = rng.random((5, 4, 3))
    targets[1] = rng.integers(0, 2, (4, 3))
    loss, d = sigmoid_binary_cross_entropy(logits, targets)
    ref, dref = torch_loss_and_grad(F.binary_cross_entropy_with_logits, logits, torch.from_numpy(targets))
    assert abs(loss - ref) < TOL and np.abs(d - dref).max() < TOL


def test_bce_mask_matches_torch_on_the_kept_positions():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((3, 5, 2))
    targets = rng.integers(0, 2, (3, 5, 2)).astype(np.float64)
    mask = rng.random((3, 5)) < 0.6                # whole time steps masked
    loss, d = sigmoid_binary_cross_entropy(logits, targets, mask=mask)
    xt = torch.tensor(logits, requires_grad=True)
    ref = F.binary_cross_entropy_with_logits(xt[torch.from_numpy(mask)], torch.from_numpy(targets[mask]))
    ref.backward()
    assert abs(loss - ref.item()) < TOL and np.abs(d - xt.grad.numpy()).max() < TOL
    assert np.all(d[~mask] == 0)
    with pytest.raises(ValueError, match="targets: expected probabilities"):
        sigmoid_binary_cross_entropy(logits, targets + 1)
    with pytest.raises(ValueError, match="targets: expected the shape"):
        sigmoid_binary_cross_entropy(logits, targets[0])


def test_mse_matches_torch_with_and_without_mask():
    rng = np.random.default_rng(5)
    pred = rng.standard_normal((4, 6, 3))
    target = rng.standard_normal((4, 6, 3))
    loss, d = mse(pred, target)
    ref, dref = torch_loss_and_grad(F.mse_loss, pred, torch.from_numpy(target))
    assert abs(loss - ref) < TOL and np.abs(d - dref).max() < TOL
    mask = np.arange(6)[None, :] < np.array([6, 2, 4, 1])[:, None]     # lengths 6, 2, 4, 1
    loss, d = mse(pred, target, mask=mask)
    pt = torch.tensor(pred, requires_grad=True)
    ref = F.mse_loss(pt[torch.from_numpy(mask)], torch.from_numpy(target[mask]))
    ref.backward()
    assert abs(loss - ref.item()) < TOL and np.abs(d - pt.grad.numpy()).max() < TOL
    with pytest.raises(ValueError, match="target: expected the shape"):
        mse(pred, target[:, :3])


def test_softmax_and_log_softmax_match_torch():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 5)) * 50
    for axis in (-1, 1):
        assert np.abs(softmax(x, axis) - torch.softmax(torch.from_numpy(x), axis).numpy()).max() < 1e-14
        assert np.abs(log_softmax(x, axis) - torch.log_softmax(torch.from_numpy(x), axis).numpy()).max() < 1e-12
    assert np.allclose(softmax(x).sum(-1), 1, atol=1e-15, rtol=0)


# ---- properties ----------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 5), T=st.integers(1, 4), C=st.integers(2, 6), shift=st.floats(-1e3, 1e3),
       seed=st.integers(0, 2 ** 32 - 1))
def test_cross_entropy_properties(N, T, C, shift, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((N, T, C)) * 5
    targets = rng.integers(0, C, (N, T))
    targets[rng.random((N, T)) < 0.3] = -100
    targets[0, 0] = 0                                     # at least one valid position
    loss, d = softmax_cross_entropy(logits, targets)
    assert loss >= 0
    assert np.abs(d.sum(-1)).max() < 1e-12                # softmax - onehot sums to 0 over classes
    assert np.all(d[targets == -100] == 0)
    shifted, d2 = softmax_cross_entropy(logits + shift, targets)    # a constant per row changes nothing
    assert abs(shifted - loss) < 1e-9 * max(1.0, abs(shift)) and np.abs(d2 - d).max() < 1e-9
