"""The served grader against the in-process question path, on the same completions and spec.

The embedded SmolLM2-135M answers every proposition of the default spec zero-shot for N gold
completions three ways, in one process:
  in-process   ``Grader.default(trained=False)``: one packed forward pass per batch of completions
               (the shared-prefix tree layout), float32 by default;
  served       llama-cpp-python's server on 127.0.0.1 serving the same GGUF (Q4_1), one request per
               question, a completion's questions in order (the server reuses the transcript's KV
               from the previous request: its prefix cache);
  no-prefix    the same requests in question-major order: consecutive requests share only the
               instructions, so the server evaluates every transcript again (its cache defeated).
Prints completions/s, prompt tokens/s (every question's full prompt, as the model reads it), the
ratios, and the agreement of the served P(yes) with the in-process one (mean |dP|).

    .venv/bin/python benchmarks/served_grader.py [--completions 8] [--dtype float32] [--threads 2]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--completions", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=0, help="server threads (default: every core)")
    a = ap.parse_args(argv)
    import torch
    from llama_server import LlamaServer
    from rbr_fast import data
    from rbr_fast.data.readers import read_jsonl
    from rbr_fast.grading import Grader, embedded

    rows = read_jsonl(data.gold(), limit=a.completions)
    convs, comps = [r.conversation for r in rows], [r.completion for r in rows]
    local = Grader.default(dtype=a.dtype, trained=False, progress=False)
    names = local.spec.proposition_names
    tokens = sum(len(local.prompt_ids(c, r, n)) for c, r in zip(convs, comps) for n in names)
    local.grade(convs[:1], comps[:1])  # warm-up
    t = time.perf_counter()
    want = local.grade(convs, comps)
    times = {"in-process": time.perf_counter() - t}

    server = LlamaServer(embedded.gguf_path(), threads=a.threads)
    try:
        served = Grader.from_server(server.url, concurrency=1, progress=False)
        served.grade(convs[:1], comps[:1], names[:2])  # warm-up
        groups = served.served_prompts(convs, comps)
        t = time.perf_counter()
        got = served.grade(convs, comps)
        times["served"] = time.perf_counter() - t
        interleaved = [[g[j]] for j in range(len(names)) for g in groups]
        t = time.perf_counter()
        served.client.ask(interleaved)
        times["no-prefix"] = time.perf_counter() - t
    finally:
        server.stop()

    dp = (want.p_yes - got.p_yes).abs()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"{len(rows)} gold completions x {len(names)} propositions, {tokens} prompt tokens; CPU {cpu}, "
          f"torch {torch.__version__}, in-process {a.dtype}, server Q4_1 on {server.threads} threads")
    print(f"{'path':<12} {'seconds':>8} {'compl/s':>8} {'tokens/s':>9} {'vs in-process':>14} {'vs served':>10}")
    for k, s in times.items():
        print(f"{k:<12} {s:8.2f} {len(rows) / s:8.3f} {tokens / s:9.0f} {times['in-process'] / s:14.2f}x "
              f"{times['served'] / s:9.2f}x")
    print(f"prefix cache speed-up (no-prefix / served time): {times['no-prefix'] / times['served']:.2f}x")
    print(f"served vs in-process P(yes): mean |dP| {float(dp.mean()):.4f}, max {float(dp.max()):.4f}; "
          f"mass {float(got.mass.mean()):.3f} vs {float(want.mass.mean()):.3f}; "
          f"answers with no yes/no in the top-{served.client.top_k}: {served.client.missing} of {served.client.asked}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
