"""The verl adapter, loaded and called the way verl 0.8 - 0.9.1 does (verl itself is not installed
here: it pulls Ray and a GPU training stack, so its loading and calling are reproduced).

verl loads ``reward.custom_reward_function.path`` as a fresh module ``custom_module_<hash>``
(``spec_from_file_location``, not put in ``sys.modules``), wraps the function so that
``reward_kwargs`` override the call's keyword arguments, and its reward manager calls it once per
sample with keywords: awaited when it is a coroutine function (every sample in flight at once),
else in the event loop's default thread pool (at most 32 threads).
"""
import asyncio
import functools
import importlib.util
import inspect
import logging
import os
import random
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import rbr_fast.integrations
from rbr_fast.integrations import pool as pool_module

VERL_FILE = str(Path(rbr_fast.integrations.__file__).parent / "verl.py")


def load_like_verl(path: str = VERL_FILE):
    spec = importlib.util.spec_from_file_location(f"custom_module_{hash(os.path.abspath(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wrap_like_verl(fn, reward_kwargs: dict):
    """verl's wrapper: positional arguments pass through, reward_kwargs win over call kwargs; a
    coroutine function stays one (inspect sees through the partial)."""
    if inspect.iscoroutinefunction(fn):
        async def call_async(fn, extra, *args, **kwargs):
            return await fn(*args, **{**kwargs, **extra})
        return functools.partial(call_async, fn, reward_kwargs)

    def call(fn, extra, *args, **kwargs):
        return fn(*args, **{**kwargs, **extra})
    return functools.partial(call, fn, reward_kwargs)


async def manager_scores(fn, samples, threads: int = 32):
    """verl's reward manager over a batch: one task per sample, keyword calls; sync functions in
    the loop's default executor."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(threads))

    async def one(s):
        kw = dict(data_source="rbr", solution_str=s["response"], ground_truth=s["ground_truth"],
                  extra_info=s["extra_info"])
        if inspect.iscoroutinefunction(fn):
            return await fn(**kw)
        return await loop.run_in_executor(None, lambda: fn(**kw))
    return await asyncio.gather(*(one(s) for s in samples))


TYPES = ["comply", "hard_refuse", "Safe Refuse 1", None, None]


def samples(n: int, seed: int = 0) -> list[dict]:
    """Samples as verl's preprocessing makes them: the prompt in extra_info (a string, or chat
    messages as verl's agent loop puts in raw_prompt, as a list or a numpy object array), the type
    in extra_info, in ground_truth or absent (inferred)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = f"Question {i % 7}: how do I do thing {i % 5}?"
        messages = [{"role": "user", "content": prompt}]
        info = ({"raw_prompt": np.array(messages, dtype=object) if i % 4 == 1 else messages} if i % 2
                else {"prompt": prompt, "index": i})
        t = rng.choice(TYPES)
        truth = "gold answer"
        if t is not None and i % 3 == 0:
            truth = t
        elif t is not None:
            info["response_type"] = t
        out.append({"prompt": messages if i % 2 else prompt, "response": f"Reply {i}: " + "words " * (i % 4),
                    "type": t, "ground_truth": truth, "extra_info": info})
    return out


@pytest.fixture(scope="module")
def kwargs(tiny_grader_dir):
    return {"model": tiny_grader_dir, "dtype": "float32", "device": "cpu", "max_wait_ms": 200}


def alone(kw, batch):
    """Each sample scored by itself, directly on the same reward."""
    reward = pool_module.pooled(**kw).reward.reward
    return [reward.score([s["prompt"]], [s["response"]], [s["type"]])[0] for s in batch]


def test_async_compute_score_loaded_by_path_pools_every_sample(kwargs):
    module = load_like_verl()
    assert module.__name__.startswith("custom_module_") and module.__name__ not in __import__("sys").modules
    fn = wrap_like_verl(module.compute_score, kwargs)
    assert inspect.iscoroutinefunction(fn)
    batch = samples(96)
    got = asyncio.run(manager_scores(fn, batch))
    assert [g["score"] for g in got] == pytest.approx(alone(kwargs, batch), abs=1e-5)  # mixed types, pooled
    assert len({tuple(sorted(g)) for g in got}) == 1 and {"score", "rbr/p_ideal", "rbr/apology"} <= set(got[0])
    assert all(0 <= g["rbr/p_ideal"] <= 1 for g in got)
    assert max(pool_module.pooled(**kwargs).batcher.sizes) == 64  # not capped by a thread pool


def test_sync_compute_score_in_verls_thread_pool(kwargs):
    kw = {**kwargs, "max_batch": 48}  # another configuration: its own pool
    fn = wrap_like_verl(load_like_verl().compute_score_sync, kw)
    assert not inspect.iscoroutinefunction(fn)
    batch = samples(64, seed=1)
    got = asyncio.run(manager_scores(fn, batch, threads=32))
    assert [g["score"] for g in got] == pytest.approx(alone(kwargs, batch), abs=1e-5)
    sizes = pool_module.pooled(**kw).batcher.sizes
    assert 1 < max(sizes) <= 32  # the 32 threads are all the concurrency there is
    # the legacy "prime" manager calls positionally (data_source, solution_str, ground_truth, extra_info)
    s = batch[0]
    positional = fn("rbr", s["response"], s["ground_truth"], s["extra_info"])
    assert positional["score"] == pytest.approx(got[0]["score"], abs=1e-5)


def test_reward_kwargs_win_and_copies_share_one_grader(kwargs):
    first = load_like_verl()
    before = pool_module.pooled(**kwargs)
    second = load_like_verl()  # verl loads the file again for another manager in the same process
    fn = wrap_like_verl(second.compute_score, kwargs)
    s = samples(1)[0]
    out = asyncio.run(fn(data_source="x", solution_str=s["response"], ground_truth=None, extra_info=s["extra_info"],
                         model="/nowhere", reward_router_address="127.0.0.1:1"))  # call kwargs lose, unknown ignored
    assert first is not second and pool_module.pooled(**kwargs) is before  # no second grader in this process
    assert out["score"] == pytest.approx(alone(kwargs, [{**s, "type": s["extra_info"].get("response_type")}])[0],
                                         abs=1e-5)


def test_a_bad_sample_raises_with_one_error_line_and_fails_alone(kwargs, caplog):
    fn = wrap_like_verl(load_like_verl().compute_score, kwargs)
    good = samples(3)
    bad = [{**good[0], "extra_info": {"index": 0}}, {**good[1], "extra_info": {"prompt": "p", "response_type": "x"}}]

    async def run():
        return await asyncio.gather(*(fn(data_source="rbr", solution_str=s["response"], ground_truth=s["ground_truth"],
                                         extra_info=s["extra_info"]) for s in good + bad), return_exceptions=True)
    with caplog.at_level(logging.ERROR, logger="rbr_fast.verl"):
        out = asyncio.run(run())
    assert all(isinstance(o, dict) for o in out[:3])
    assert isinstance(out[3], ValueError) and "extra_info['prompt']" in str(out[3])
    assert isinstance(out[4], ValueError) and "sample.response_type: unknown response type 'x'" in str(out[4])
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2


def _worker_process(kw: dict, batch: list) -> tuple:
    """One verl reward worker: its own process, the file loaded by path, one grader of its own."""
    module = load_like_verl()
    fn = wrap_like_verl(module.compute_score, kw)
    scores = [g["score"] for g in asyncio.run(manager_scores(fn, batch))]
    return os.getpid(), scores, pool_module.loaded()


def test_several_worker_processes_each_load_one_grader(kwargs):
    batch = samples(8, seed=2)
    ctx = __import__("multiprocessing").get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        results = [f.result(timeout=300) for f in [ex.submit(_worker_process, kwargs, batch[:4]),
                                                   ex.submit(_worker_process, kwargs, batch[4:])]]
    assert results[0][0] != results[1][0] and [r[2] for r in results] == [1, 1]
    assert results[0][1] + results[1][1] == pytest.approx(alone(kwargs, batch), abs=1e-5)


def test_server_url_shares_one_grader_across_workers(kwargs):
    pytest.importorskip("fastapi")
    from live_server import Server
    reward = pool_module.pooled(**kwargs).reward
    server = Server(reward, token="t0k")
    try:
        fn = wrap_like_verl(load_like_verl().compute_score, {"server_url": server.url, "token": "t0k"})
        batch = samples(12, seed=3)  # types in extra_info, in ground_truth (read by the server) or absent
        assert any(s["ground_truth"] != "gold answer" for s in batch)
        got = asyncio.run(manager_scores(fn, batch))
        with pytest.raises(TypeError, match=r"unknown rbr_fast verl option\(s\) \['model'\] with server_url"):
            asyncio.run(wrap_like_verl(load_like_verl().compute_score, {"server_url": server.url, "model": "m"})(
                data_source="rbr", solution_str="x", ground_truth=None, extra_info={"prompt": "p"}))
    finally:
        server.stop()
    assert [g["score"] for g in got] == pytest.approx(alone(kwargs, batch), abs=1e-5)
    assert len({tuple(sorted(g)) for g in got}) == 1


# verl's reward managers (verl 0.8.0.dev, commit b178a3c; ``verl/experimental/reward_loop/reward_manager``
# and ``verl/workers/reward_manager``), each reduced to how it calls ``compute_score`` for one sample and
# what it makes of the answer. ``extra_info`` is the dataset's; naive / remote / limited add ``num_turns``
# and ``rollout_reward_scores``; dapo and gdpo pass it as it is.
def _verl_extra(s):
    return {**s["extra_info"], "num_turns": None, "rollout_reward_scores": {}}


async def naive_manager(fn, s):
    kw = dict(data_source="rbr", solution_str=s["response"], ground_truth=s["ground_truth"], extra_info=_verl_extra(s))
    result = await fn(**kw) if inspect.iscoroutinefunction(fn) else await asyncio.to_thread(lambda: fn(**kw))
    return (result["score"], result) if isinstance(result, dict) else (result, {"acc": result})


async def dapo_manager(fn, s):  # overlong buffer off: the reward is the score
    kw = dict(data_source="rbr", solution_str=s["response"], ground_truth=s["ground_truth"], extra_info=s["extra_info"])
    result = await fn(**kw) if inspect.iscoroutinefunction(fn) else await asyncio.to_thread(lambda: fn(**kw))
    return (result["score"], result) if isinstance(result, dict) else (result, {"acc": result})


async def gdpo_manager(fn, s):  # positional, as the legacy batch-style managers call it
    args = ("rbr", s["response"], s["ground_truth"], s["extra_info"])
    result = await fn(*args) if inspect.iscoroutinefunction(fn) else await asyncio.to_thread(lambda: fn(*args))
    return (result["score"], result) if isinstance(result, dict) else (result, {"acc": result})


async def remote_manager(fn, s):  # the same call, in one of its Ray actors (a thread here)
    assert not inspect.iscoroutinefunction(fn), "Async reward score is not supported in remote reward manager. "
    return await naive_manager(fn, s)


_LIMITED = {}


async def limited_manager(fn, s, max_concurrent: int = 1, timeout: float = 300.0):
    """verl's ``rate_limited`` manager: a class-level semaphore (``max_concurrent``, default 1), a
    timeout, and an exception or timeout turned into reward 0.0 with ``{"error", "acc"}``."""
    sem = _LIMITED.setdefault((asyncio.get_running_loop(), max_concurrent), asyncio.Semaphore(max_concurrent))
    kw = dict(data_source="rbr", solution_str=s["response"], ground_truth=s["ground_truth"], extra_info=_verl_extra(s))
    async with sem:
        try:
            call = fn(**kw) if inspect.iscoroutinefunction(fn) else asyncio.to_thread(lambda: fn(**kw))
            result = await asyncio.wait_for(call, timeout=timeout)
            return (result["score"], dict(result)) if isinstance(result, dict) else (result, {"acc": result})
        except asyncio.TimeoutError:
            return 0.0, {"timeout": True, "acc": 0.0}
        except Exception as e:
            return 0.0, {"error": str(e), "acc": 0.0}


MANAGERS = {"naive": naive_manager, "dapo": dapo_manager, "gdpo": gdpo_manager, "limited": limited_manager,
            "remote": remote_manager}


def run_manager(manager, fn, batch):
    async def go():
        return await asyncio.gather(*(manager(fn, s) for s in batch))
    return asyncio.run(go())


# verl's remote manager takes plain functions only (name=compute_score_sync): that pair is not a configuration
@pytest.mark.parametrize("name,form", [(n, f) for n in MANAGERS for f in ("compute_score", "compute_score_sync")
                                       if not (n == "remote" and f == "compute_score")])
def test_every_verl_manager_gives_the_direct_rewards(kwargs, name, form):
    fn = wrap_like_verl(getattr(load_like_verl(), form), kwargs)
    batch = samples(10, seed=4)
    got = run_manager(MANAGERS[name], fn, batch)
    assert [g[0] for g in got] == pytest.approx(alone(kwargs, batch), abs=1e-5)
    assert len({tuple(sorted(g[1])) for g in got}) == 1 and all(g[1]["rbr/failed"] == 0.0 for g in got)


def test_a_failed_sample_keeps_the_keys_with_on_error(kwargs, caplog):
    """Under verl's ``limited`` manager a raised error becomes {"error", "acc"}, keys the other samples
    lack; with ``on_error=0.0`` the failed sample has the same keys as every other."""
    batch = samples(4, seed=5)
    batch[2] = {**batch[2], "extra_info": {"index": 2}}  # no prompt: dapo on data without extra_info['prompt']
    raised = run_manager(limited_manager, wrap_like_verl(load_like_verl().compute_score, kwargs), batch)
    assert raised[2][1].keys() == {"error", "acc"} and "extra_info['prompt']" in raised[2][1]["error"]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="rbr_fast.verl"):
        kept = run_manager(limited_manager, wrap_like_verl(load_like_verl().compute_score, {**kwargs, "on_error": 0.0}),
                           batch)
    assert len({tuple(sorted(g[1])) for g in kept}) == 1
    assert kept[2][0] == 0.0 and kept[2][1]["rbr/failed"] == 1.0 and np.isnan(kept[2][1]["rbr/apology"])
    good = [s for i, s in enumerate(batch) if i != 2]
    assert [g[0] for i, g in enumerate(kept) if i != 2] == pytest.approx(alone(kwargs, good), abs=1e-5)
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


def test_unknown_options_are_refused_by_name(kwargs):
    fn = wrap_like_verl(load_like_verl().compute_score, {**kwargs, "modle": "/x", "max_batchs": 3})
    with pytest.raises(TypeError, match=r"unknown rbr_fast verl option\(s\) \['max_batchs', 'modle'\]; known: "):
        asyncio.run(naive_manager(fn, samples(1)[0]))
    local = wrap_like_verl(load_like_verl().compute_score_sync, {**kwargs, "server_url": "local", "token": "t"})
    with pytest.raises(TypeError, match=r"unknown rbr_fast verl option\(s\) \['token'\] with server_url=local"):
        local("rbr", "x", None, {"prompt": "p"})
    for bad in ({"on_error": "zero"}, {"reasoning": "drop"}):
        with pytest.raises((TypeError, ValueError), match="on_error|reasoning"):
            wrap_like_verl(load_like_verl().compute_score_sync, {**kwargs, **bad})(
                "rbr", "x", None, {"prompt": "p"})


def test_reasoning_option_in_reward_kwargs(kwargs):
    fn = wrap_like_verl(load_like_verl().compute_score, kwargs)
    keep = wrap_like_verl(load_like_verl().compute_score, {**kwargs, "reasoning": "keep"})
    s = samples(1)[0]
    think = {**s, "response": "<think>" + "Let me reason about this request at length. " * 30 + "</think>" + s["response"]}
    (plain, _), (stripped, _), (kept, _) = (run_manager(naive_manager, f, [x])[0]
                                            for f, x in ((fn, s), (fn, think), (keep, think)))
    assert stripped == pytest.approx(plain, abs=1e-6) and abs(kept - plain) > 1e-3


def _remote_actor(kw: dict, batch: list) -> tuple:
    """One of verl's remote-manager Ray actors: its own process, the file loaded by path, plain calls in threads."""
    fn = wrap_like_verl(load_like_verl().compute_score_sync, {**kw, "server_url": "local"})
    got = run_manager(remote_manager, fn, batch)
    return [g[0] for g in got], pool_module.loaded()


def test_server_url_local_gives_remote_actors_one_grader_per_node(kwargs):
    """server_url=local: the actors of verl's remote manager start one `rbr-fast serve` on the node (the first
    under a lock, the others find it) and score through it, loading no grader themselves; it stops when idle."""
    pytest.importorskip("fastapi")
    import json
    import signal
    from rbr_fast.integrations import node_graders, node_server
    batch = samples(9, seed=5)
    ctx = __import__("multiprocessing").get_context("spawn")
    with ProcessPoolExecutor(3, mp_context=ctx) as ex:
        results = [f.result(timeout=300) for f in [ex.submit(_remote_actor, kwargs, batch[i::3]) for i in range(3)]]
    records = list(node_graders.folder().glob("serve-*.json"))
    assert len(records) == 1 and [r[1] for r in results] == [0, 0, 0]
    served = json.loads(records[0].read_text())
    try:
        want = alone(kwargs, batch)
        for i, (scores, _) in enumerate(results):
            assert scores == pytest.approx(want[i::3], abs=1e-5)
        assert node_server.local_server(pool_module.config(**kwargs)).pid == served["pid"]  # found, not started again
        coro = wrap_like_verl(load_like_verl().compute_score, {**kwargs, "server_url": "local"})
        assert [g[0] for g in run_manager(naive_manager, coro, batch[:3])] == pytest.approx(want[:3], abs=1e-5)
    finally:
        os.kill(served["pid"], signal.SIGTERM)
    # a server nobody calls stops by itself
    quiet = node_server.local_server(pool_module.config(**{**kwargs, "max_batch": 7}), idle_exit_s=1.0)
    assert quiet.pid != served["pid"]
    for _ in range(120):
        if not node_graders.alive(quiet.pid) or _reaped(quiet.pid):
            break
        __import__("time").sleep(0.25)
    else:
        os.kill(quiet.pid, signal.SIGTERM)
        pytest.fail("the idle server did not stop")


def _reaped(pid: int) -> bool:
    """The server was started by this process: once it exits it is a zombie until waited for."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True
