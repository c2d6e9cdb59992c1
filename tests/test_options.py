from dataclasses import dataclass

import pytest

from wsbench.errors import OptionError
from wsbench.interfaces import Segmenter
from wsbench.options import describe_options, option, parse_options


class Dummy(Segmenter):
    name = "dummy"

    @dataclass
    class Options:
        t0: float = option(0.3, "time")
        steps: int = option(10, "steps")
        loss: str = option("logit", "loss", choices=("logit", "bce"))
        smooth: bool = option(False, "smooth")
        sigmas: tuple[float, ...] = option((1.0, 2.0), "scales")
        weights: str | None = option(None, "a file")

    def segment(self, x, predictor=None, generator=None):
        return x[:, 0]


def test_coercion_from_strings():
    o = parse_options(Dummy, {"t0": "0.5", "steps": "4", "smooth": "yes", "sigmas": "1,2.5", "weights": "none"})
    assert (o.t0, o.steps, o.smooth, o.sigmas, o.weights) == (0.5, 4, True, (1.0, 2.5), None)


def test_defaults():
    o = Dummy().options
    assert o.t0 == 0.3 and o.loss == "logit"


@pytest.mark.parametrize("bad, needle", [
    ({"t1": 1}, "unknown option 't1' for segmenter 'dummy' (did you mean 't0'?)"),
    ({"steps": "ten"}, "bad value for option 'steps'"),
    ({"steps": "1.5"}, "expected an integer"),
    ({"loss": "mse"}, "choose one of logit, bce"),
    ({"smooth": "maybe"}, "expected a boolean"),
    ({"t0": "nan"}, "NaN"),
])
def test_bad_options_name_valid_ones(bad, needle):
    with pytest.raises(OptionError) as e:
        Dummy(bad)
    assert needle in str(e.value)
    if "unknown" in needle or "bad value" in needle:
        assert "t0 (float, default 0.3)" in str(e.value)


def test_describe():
    d = {x["name"]: x for x in describe_options(Dummy.Options)}
    assert d["loss"]["choices"] == ("logit", "bce") and d["steps"]["type"] == "int"


def test_changed_options_are_the_non_defaults_after_coercion():
    assert Dummy().changed_options() == {}
    # "0.3" coerces to the default and is not a change; a tuple compares as its list form
    d = Dummy({"t0": "0.3", "steps": "4", "sigmas": "1,2"})
    assert d.changed_options() == {"steps": 4}
    assert Dummy({"sigmas": "1,3"}).changed_options() == {"sigmas": [1.0, 3.0]}


def test_parse_assignments():
    from wsbench.options import parse_assignments

    assert parse_assignments("t0=0.4, scale=0.2,") == {"t0": "0.4", "scale": "0.2"}
    assert parse_assignments("") == {}
    with pytest.raises(OptionError, match="--config 'a=1,b'"):
        parse_assignments("a=1,b")
