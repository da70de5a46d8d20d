"""Targets with their own shape and statistic: ``NAME:BUDGETS@batch=16,seq=128,p=99``."""

import pytest

from yoco_deploy.deploy.budgets import BudgetError, Target, check_distinct, parse_target


def test_a_server_target_names_its_shape_and_statistic():
    t = parse_target("server:latency=20ms@batch=16,seq=128,p=99")
    assert (t.batch, t.seq_len, t.percentile, t.statistic) == (16, 128, 99.0, "p99")
    assert t.budgets == {"latency": 20.0} and t.shape(1, 64) == (16, 128)
    assert parse_target(t.label()) == t  # the label reads back as the same target
    assert t.slug() == "server_latency-20ms_batch-16_seq-128_p-99"


def test_an_edge_target_keeps_the_runs_shape_and_the_median():
    t = parse_target("edge:latency=5ms")
    assert t.shape(1, 64) == (1, 64) and t.statistic == "median" and "@" not in t.label()
    assert parse_target("edge:latency=5ms@p=50").statistic == "median"
    assert parse_target("edge:latency=5ms@seq=32").shape(1, 64) == (1, 32)


def test_one_target_at_two_shapes_is_two_targets():
    a, b = parse_target("d:latency=5ms"), parse_target("d:latency=5ms@batch=8")
    check_distinct([("a", a), ("b", b)])
    assert a != b and a.slug() != b.slug()
    with pytest.raises(BudgetError, match="same as"):
        check_distinct([("b", b), ("again", parse_target("d:latency=5ms@batch=8"))])


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("d:latency=5ms@", "write NAME:"),
        ("d:latency=5ms@batch=0", "positive whole number"),
        ("d:latency=5ms@batch=two", "positive whole number"),
        ("d:latency=5ms@seq=1.5", "positive whole number"),
        ("d:latency=5ms@p=100", "50 \\(the median\\) to 99.9"),
        ("d:latency=5ms@p=20", "50 \\(the median\\) to 99.9"),
        ("d:latency=5ms@p=high", "a percentile such as 99"),
        ("d:latency=5ms@speed=3", "after @ use batch=N, seq=N and p=PERCENTILE"),
        ("d:latency=5ms@batch=2,batch=4", "given twice"),
        ("d:@batch=2", "write NAME:"),
    ],
)
def test_a_bad_shape_is_one_clear_error(text, words):
    with pytest.raises(BudgetError, match=words) as err:
        parse_target(text)
    assert "\n" not in str(err.value)


def test_a_target_built_in_python_is_checked_alike():
    with pytest.raises(BudgetError, match="positive integer"):
        Target("d", {"latency": 5.0}, batch=0)
