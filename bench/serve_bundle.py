"""A server bundle behind Ray Serve under concurrent requests, with and without batching.

    make bench-serve    # the demo's super-BERT shipped for a server target, then this
    .venv/bin/python bench/serve_bundle.py demo-out/bundles/<server target>[/<bundle>]

The bundle is served as `yoco-deploy serve` serves it (yoco_deploy.serve_ray: one replica,
Ray Serve's @serve.batch up to the target's batch) on loopback, and an asyncio client
keeps --concurrency requests in flight, one text each, until --requests are answered.
Every request is a full-length text (SST-2 dev sentences joined until they fill the
bundle's sequence length), so a full batch has exactly the shape the manifest was timed
at. Batching on and off (max batch 1) alternate, --rounds rounds each, after a warm-up;
per round: p50 and p99 of the request latency as the client sees it, and throughput.

Against the manifest: its latency at the budgeted statistic (e.g. p99 of one batch of 16)
and its throughput (sequences per second at that batch, from the median). Writes
bench/results/serve_bundle.{json,md} (or --out). A timing job: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, ROOT, machine_info

DEV = ROOT.parent / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"


def long_texts(bundle, n: int, dev: Path) -> list[str]:
    """``n`` texts of at least the bundle's sequence length in tokens, from SST-2 dev."""
    sentences = [line.split("\t")[0] for line in dev.read_text().splitlines()[1:]]
    seq = bundle.manifest.seq_len
    texts, i = [], 0
    while len(texts) < n:
        parts = []
        while len(bundle.tokenizer.encode(" ".join(parts)).ids) < seq:
            parts.append(sentences[i % len(sentences)])
            i += 1
        texts.append(" ".join(parts))
    return texts


async def load(url: str, texts: list[str], concurrency: int) -> tuple[list[float], float]:
    """Each request's latency (ms) with ``concurrency`` in flight, and the wall time (s)."""
    import aiohttp

    queue = list(reversed(texts))
    latencies: list[float] = []

    async def client(session):
        while queue:
            text = queue.pop()
            start = time.perf_counter()
            async with session.post(url, json={"text": text}) as answer:
                assert answer.status == 200, await answer.text()
                await answer.json()
            latencies.append((time.perf_counter() - start) * 1e3)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--requests", type=int, default=960, help="Per round and mode.")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="Requests in flight (default: twice the target's batch).")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=64)
    parser.add_argument("--dev", type=Path, default=DEV, help="SST-2 dev.tsv (the texts).")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_bundle.json")
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from yoco_deploy import load_bundle
    from yoco_deploy.serve_ray import ServeSettings, application, free_port

    if not (args.bundle / "manifest.json").is_file():  # a target's folder: its one bundle
        found = sorted(p.parent for p in args.bundle.glob("*/manifest.json"))
        if len(found) != 1:
            raise SystemExit(f"{args.bundle}: give a bundle, or a folder holding one bundle")
        args.bundle = found[0]
    bundle = load_bundle(args.bundle)
    m = bundle.manifest
    concurrency = args.concurrency or 2 * m.batch
    texts = long_texts(bundle, args.requests, args.dev)
    port = free_port()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/"
    modes = {"batched": ServeSettings.for_bundle(args.bundle),
             "unbatched": ServeSettings.for_bundle(args.bundle, max_batch_size=1)}  # fmt: skip
    rounds: dict[str, list[dict]] = {name: [] for name in modes}
    try:
        for r in range(args.rounds):
            order = list(modes) if r % 2 == 0 else list(reversed(modes))
            for name in order:
                serve.run(application(args.bundle, modes[name]), blocking=False)
                asyncio.run(load(url, texts[: args.warmup], concurrency))
                latencies, wall = asyncio.run(load(url, texts, concurrency))
                row = {"p50_ms": float(np.percentile(latencies, 50)),
                       "p99_ms": float(np.percentile(latencies, 99)),
                       "throughput": len(latencies) / wall, "wall_s": wall}  # fmt: skip
                rounds[name].append(row)
                say = f"round {r + 1} {name}: p50 {row['p50_ms']:.1f} ms, "
                print(say + f"p99 {row['p99_ms']:.1f} ms, {row['throughput']:.1f} seq/s")
                serve.delete("default")
    finally:
        serve.shutdown()
        ray.shutdown()
    result = {
        "command": "bench/serve_bundle.py " + " ".join(argv or __import__("sys").argv[1:]),
        "machine": machine_info(),
        "bundle": args.bundle.name,
        "manifest": {
            "batch": m.batch,
            "seq_len": m.seq_len,
            "statistic": m.statistic,
            "latency_ms": m.measured_latency_ms.percentile or m.measured_latency_ms.median,
            "median_ms": m.measured_latency_ms.median,
            "throughput": m.throughput,
            "threads": m.session.get("threads"),
        },
        "requests": args.requests,
        "concurrency": concurrency,
        "rounds": args.rounds,
        "max_batch_size": {name: s.max_batch_size for name, s in modes.items()},
        "batch_wait_ms": modes["batched"].batch_wait_timeout_s * 1e3,
        "results": {name: summary(rows) for name, rows in rounds.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table(result))
    print(table(result))
    return 0


def summary(rows: list[dict]) -> dict:
    """Per figure: the median over rounds, its range, and every round."""
    return {
        key: {"median": float(np.median([r[key] for r in rows])),
              "range": [min(r[key] for r in rows), max(r[key] for r in rows)],
              "rounds": [r[key] for r in rows]}
        for key in ("p50_ms", "p99_ms", "throughput")
    }  # fmt: skip


def table(result: dict) -> str:
    m, machine = result["manifest"], result["machine"]
    stat = m["statistic"] or "median"
    lines = [
        "# A server bundle behind Ray Serve",
        "",
        f"Command: `{result['command']}`. Machine: {machine.get('cpu')} "
        f"({machine.get('logical_cores', '?')} cores), client, Ray and the replica on it together. "
        f"Bundle `{result['bundle']}`: batch {m['batch']}, seq {m['seq_len']}, "
        f"{m['threads']} ONNX Runtime threads. {result['requests']} full-length requests "
        f"per round with {result['concurrency']} in flight, {result['rounds']} rounds per "
        "mode, interleaved; median over rounds [range].",
        "",
        "| | p50 request latency (ms) | p99 request latency (ms) | throughput (seq/s) |",
        "|---|---|---|---|",
    ]
    for name, r in result["results"].items():
        size = result["max_batch_size"][name]
        cells = [f"{r[k]['median']:.1f} [{r[k]['range'][0]:.1f}, {r[k]['range'][1]:.1f}]"
                 for k in ("p50_ms", "p99_ms", "throughput")]  # fmt: skip
        lines.append(f"| Ray Serve, {name} (max batch {size}) | " + " | ".join(cells) + " |")
    throughput = f"{m['throughput']:.1f}" if m["throughput"] else "-"
    lines.append(
        f"| manifest: one batch of {m['batch']} ({stat}; median {m['median_ms']:.1f} ms) "
        f"| - | {m['latency_ms']:.1f} ({stat} of one batch) | {throughput} |"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
