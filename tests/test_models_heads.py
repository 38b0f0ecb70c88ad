"""Training heads (AAM with sub-centers and inter-top-k, softmax) and the margin scheduler."""

import math

import pytest
import torch

from wespeaker_lap.models import PROJECTIONS, ArcMarginProduct, get_projection
from wespeaker_lap.utils.schedulers import MarginScheduler, margin_ratio


def one_hot_head(head, num_class, dim):
    """Class c's (first) sub-center along basis vector c."""
    with torch.no_grad():
        head.weight.zero_()
        for c in range(num_class):
            head.weight[c * head.K, c] = 1.0
    return head


def test_aam_target_logit_is_scaled_cos_theta_plus_margin():
    head = one_hot_head(ArcMarginProduct(4, 4, scale=30.0, margin=0.3), 4, 4)
    theta = 0.6
    x = torch.tensor([[math.cos(theta), math.sin(theta), 0.0, 0.0]])
    logits = head(x, torch.tensor([0]))
    torch.testing.assert_close(logits[0, 0], torch.tensor(30.0 * math.cos(theta + 0.3)))
    torch.testing.assert_close(logits[0, 1], torch.tensor(30.0 * math.sin(theta)))
    assert logits[0, 2] == 0.0


def test_aam_beyond_pi_minus_margin_keeps_decreasing():
    head = one_hot_head(ArcMarginProduct(2, 2, scale=1.0, margin=0.5), 2, 2)
    theta = math.pi - 0.2  # > pi - m
    x = torch.tensor([[math.cos(theta), math.sin(theta)]])
    logit = head(x, torch.tensor([0]))[0, 0]
    expected = math.cos(theta) - (1.0 + math.cos(math.pi - 0.5))
    torch.testing.assert_close(logit, torch.tensor(expected))
    assert logit < -1.0


def test_subcenter_cosine_is_the_best_subcenter():
    head = get_projection("arc_margin_intertopk_subcenter", embed_dim=3, num_class=6,
                          scale=1.0, margin=0.0, k_top=0)
    assert head.weight.shape == (18, 3)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[0 * 3 + 2, 0] = 1.0  # class 0, third sub-center along e0
        head.weight[0 * 3 + 0, 1] = 1.0  # class 0, first sub-center along e1
    logits = head(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([1, 1]))
    torch.testing.assert_close(logits[:, 0], torch.tensor([1.0, 1.0]))


def test_inter_topk_penalises_hardest_negatives_with_margin_scaled_penalty():
    head = one_hot_head(
        ArcMarginProduct(4, 4, scale=1.0, margin=0.4, K=1, mp=0.1, k_top=1), 4, 4
    )
    x = torch.tensor([[0.8, 0.5, 0.2, 0.0]])
    x = x / x.norm()
    cos = x[0]
    head.update(0.2)  # half the final margin: half the penalty
    logits = head(x, torch.tensor([0]))
    theta1 = torch.acos(cos[1])
    torch.testing.assert_close(logits[0, 1], torch.cos(theta1 - 0.05))  # hardest negative
    torch.testing.assert_close(logits[0, 2], cos[2])  # not in the top 1
    assert head.current_mp == pytest.approx(0.05)
    head.update(0.0)
    assert head.current_mp == 0.0


def test_large_margin_finetuning_switches_inter_topk_off():
    head = get_projection("arc_margin_intertopk_subcenter", embed_dim=4, num_class=8,
                          margin=0.5, do_lm=True)
    assert head.k_top == 0 and head.mp == 0.0


def test_softmax_head_is_a_linear_layer_ignoring_labels():
    head = get_projection("softmax", embed_dim=4, num_class=3)
    x = torch.randn(2, 4)
    torch.testing.assert_close(head(x, torch.tensor([0, 1])), x @ head.weight.T + head.bias)


def test_unknown_projection_lists_valid_names():
    with pytest.raises(ValueError, match="unknown projection 'arcface'.*arc_margin"):
        get_projection("arcface", embed_dim=4, num_class=3)
    assert set(PROJECTIONS) == {"arc_margin", "arc_margin_intertopk_subcenter", "softmax"}


def test_projection_rejects_unknown_argument():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['scale'\]"):
        get_projection("softmax", embed_dim=4, num_class=3, scale=30.0)


class Head:
    margin = None

    def update(self, margin):
        self.margin = margin


def scheduler(increase_type, **kw):
    args = dict(epoch_iter=10, initial_margin=0.0, final_margin=0.4, increase_start_epoch=2,
                fix_start_epoch=6, increase_type=increase_type)
    args.update(kw)
    return MarginScheduler(Head(), **args)


@pytest.mark.parametrize(
    ("increase_type", "epoch", "expected"),
    [
        ("linear", 0, 0.0),
        ("linear", 2, 0.0),
        ("linear", 4, 0.2),
        ("linear", 5, 0.3),
        ("linear", 6, 0.4),
        ("linear", 30, 0.4),
        ("exp", 4, 0.4 * (1 - 1e-3**0.5)),  # WeSpeaker: 1 - 1e-3 ** r
        ("exp", 5, 0.4 * (1 - 1e-3**0.75)),
        ("log", 4, 0.4 * (1 + math.log(5e-3 + 0.995 * 0.5) / -math.log(5e-3))),
        ("log", 6, 0.4),
    ],
)
def test_margin_schedule_value_at_epoch(increase_type, epoch, expected):
    s = scheduler(increase_type)
    assert s.margin_at(epoch * 10) == pytest.approx(expected, abs=1e-9)


def test_margin_scheduler_steps_drive_the_head_margin():
    s = scheduler("linear")
    assert s.projection.margin == 0.0  # initial margin set at construction
    for _ in range(41):
        s.step()
    assert s.projection.margin == pytest.approx(0.2)  # iteration 40 = epoch 4
    s.step(current_iter=100)
    assert s.get_margin() == pytest.approx(0.4)


def test_margin_scheduler_with_update_margin_false_leaves_head_alone():
    s = scheduler("linear", update_margin=False)
    s.step(current_iter=50)
    assert s.projection.margin is None


def test_margin_curves_start_at_zero_end_at_one_and_rise():
    for kind in ("exp", "linear", "log"):
        values = [margin_ratio(r / 10, kind) for r in range(11)]
        assert values[0] == pytest.approx(0.0)
        assert values[-1] == pytest.approx(1.0, abs=2e-3)  # WeSpeaker exp ends at 0.999
        assert values == sorted(values)


def test_unknown_increase_type_lists_valid_types():
    with pytest.raises(ValueError, match="unknown increase_type 'cos'.*'exp', 'linear', 'log'"):
        scheduler("cos")
