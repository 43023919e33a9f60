"""The engine's seams: the denoiser protocol, the one callback signature, prepared sets checked
against the request, and results that record what ran."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdm_core import SamplerConfig, load, sample
from cdm_core.cli.main import main as cli_main
from cdm_core.engine.blend import F64, Sources, StepResult, normalise_log_weights
from cdm_core.engine.models import CFDM, MODELS, Denoiser, build_model
from cdm_core.engine.sampler import sample_model, time_grid
from cdm_core.errors import CdmInputError
from cdm_core.pipeline.prepared import prepare

CFG = SamplerConfig(n_samples=5, sigma=0.3, draws=3, steps=7, seed=4, batch_size=2, trajectory=True)


@pytest.fixture(scope="module")
def moons():
    return load("moons:n=300")


class NearestMean:
    """A toy model through the protocol only: D(x, t) = the mean of the 3 training points nearest
    to x / t (all of them at t = 0), its sources those points with weight 1/3."""

    name = "nearest-mean"
    supports_sensitivity = False
    source_kind = "convex"

    def __init__(self, training_set, log_pi):
        self.training_set, self.log_pi = training_set, log_pi

    def begin(self, scaled):
        return None

    def denoise(self, state, x, t, sources=False, draws=False):
        pts = self.training_set.points
        b = len(x)
        if t == 0:
            ids = torch.arange(3, device=x.device).expand(b, -1)
        else:
            ids = torch.cdist(x / t, pts).topk(3, largest=False).indices
        w = torch.full(ids.shape, 1 / 3, dtype=F64, device=x.device)
        smoothed = torch.einsum("bk,bkd->bd", w, pts[ids])
        return StepResult(smoothed, torch.zeros(b, dtype=F64), torch.zeros(b, dtype=F64),
                          Sources(ids, w) if sources else None)

    def describe(self):
        return {"model": self.name}


def test_cfdm_satisfies_the_protocol_and_is_registered(moons):
    ts = prepare(moons, CFG)
    model = build_model(ts, normalise_log_weights(None, ts.n), CFG)
    assert isinstance(model, Denoiser) and isinstance(model, CFDM) and MODELS["cfdm"] is CFDM
    assert model.describe() == {"model": "cfdm", "strategy": "factorised", "index": "auto", "device": "cpu",
                                "backend": "local", "sources": "convex"}


def test_a_new_model_is_one_class_and_starts_from_the_same_noise(moons):
    """A model written against the protocol alone runs in the same sampler; sample i starts from
    the same state under every model (per-sample seeds), and its sources reproduce its samples."""
    ts = prepare(moons, CFG)
    lp = normalise_log_weights(None, ts.n)
    starts = {}
    for model in (NearestMean(ts, lp), CFDM(ts, lp, CFG)):
        seen = []
        res = sample_model(model, CFG, callback=lambda info: seen.append(info))
        starts[model.name] = np.concatenate([i["x"].numpy() for i in seen if i["i"] == 0])
        assert res.ran["model"] == model.name
        pts = moons.points.astype(np.float64)
        blend = np.einsum("nk,nkd->nd", res.source_weights, pts[np.maximum(res.source_ids, 0)])
        np.testing.assert_allclose(blend, res.samples, atol=1e-12)
    np.testing.assert_array_equal(starts["nearest-mean"], starts["cfdm"])
    assert isinstance(NearestMean(ts, lp), Denoiser)


def test_the_callback_carries_states_and_denoised_values_at_every_step(moons):
    seen = []
    res = sample(moons, CFG, callback=seen.append)
    grid = time_grid(CFG.start, CFG.steps)
    batches = -(-CFG.n_samples // CFG.batch_size)
    assert len(seen) == CFG.steps * batches
    for info in seen:
        assert {"i", "t", "x", "denoised", "step", "steps", "batch", "batches", "sample_ids"} <= info.keys()
        k, ids = info["i"], info["sample_ids"]
        assert info["t"] == grid[k] and info["step"] == k + 1 and info["batches"] == batches
        x, d = info["x"].numpy(), info["denoised"].numpy()
        # x is the state at t (data units), and one Euler step with D reaches the next saved state
        np.testing.assert_allclose(x, res.trajectory[k, ids], atol=1e-12)
        h = grid[k + 1] - grid[k]
        nxt = d if k == CFG.steps - 1 else x + h * (d - x) / (1 - grid[k])
        np.testing.assert_allclose(nxt, res.trajectory[k + 1, ids], atol=1e-11)
    assert [i["i"] for i in seen[:CFG.steps]] == list(range(CFG.steps))


def test_sensitivity_reports_through_the_same_callback(moons):
    from cdm_core.analysis.sensitivity import jacobian
    seen = []
    jac, samples = jacobian(moons, CFG.replace(trajectory=False), [0, 1, 2], callback=seen.append)
    assert len(seen) == CFG.steps * 3
    last = [i for i in seen if i["i"] == CFG.steps - 1]
    np.testing.assert_allclose(np.concatenate([i["denoised"].numpy() for i in last]), samples, atol=1e-12)


@pytest.mark.parametrize("prepared_for,asked,message", [
    (dict(index="auto"), dict(index="flat"), "built for index auto, the request asks for index flat"),
    (dict(index="exact"), dict(index="auto"), "built for index exact"),
    (dict(index="ivf", nlist=8), dict(index="ivf", nlist=16), "IVF index"),
])
def test_a_prepared_set_that_does_not_match_the_request_is_refused(moons, prepared_for, asked, message):
    prep = prepare(moons, CFG.replace(**prepared_for))
    with pytest.raises(CdmInputError, match=message):
        sample(moons, CFG.replace(**asked), prepared=prep)


def test_a_prepared_set_of_other_data_is_refused(moons):
    prep = prepare(load("moons:n=301"), CFG)
    with pytest.raises(CdmInputError, match="not this data set"):
        sample(moons, CFG, prepared=prep)


def test_results_record_what_ran(moons):
    for index, strategy in (("auto", "factorised"), ("exact", "dense"), ("flat", "truncated")):
        cfg = CFG.replace(index=index)
        res = sample(moons, cfg, prepared=prepare(moons, cfg))
        assert res.config.index == index
        assert res.ran == {"model": "cfdm", "strategy": strategy, "index": index, "device": "cpu", "backend": "local",
                           "sources": "convex"}


def test_an_unknown_model_is_one_line(capsys):
    with pytest.raises(CdmInputError, match="model must be one of cfdm"):
        SamplerConfig(model="ddpm")
    assert cli_main(["sample", "--data", "moons", "--n", "2", "--model", "ddpm", "--out", "x.npz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ddpm" in err[0]


def test_a_sweep_forwards_every_step_with_progress_over_the_whole_sweep(moons):
    from cdm_core.analysis.sweep import sweep
    from cdm_core.engine.sampler import fraction_done
    seen = []
    sweep(moons, CFG.replace(trajectory=False), [0.0, 0.2], seeds=2, callback=seen.append)
    per_run = CFG.steps * 3  # 3 batches of 2
    assert len(seen) == 4 * per_run
    assert all({"i", "t", "x", "denoised"} <= i.keys() for i in seen)
    assert [i["setting"] for i in seen[::per_run]] == [1, 2, 3, 4] and seen[0]["settings"] == 4
    done = [fraction_done(i) for i in seen]
    assert done == sorted(done) and done[-1] == 1.0 and done[per_run - 1] == pytest.approx(0.25)
