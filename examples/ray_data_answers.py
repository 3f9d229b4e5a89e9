"""Answer a job manifest with Ray Data and write the answers as Parquet.

    python examples/ray_data_answers.py questions.jsonl answers/ --model ckpt/ --budget 227 \
        [--address HEAD:6379] [--concurrency 2] [--num-gpus 1] [--device cuda --dtype bfloat16]

The manifest has one JSON object per line with "video" (a path every node can read) and
"question" (the `vidprune job` format, one question per line). Each of ``--concurrency``
Ray Data actors loads the model once (:class:`vidprune.ray_data.VideoQAPredictor`).
"""

from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest")
    p.add_argument("out", help="folder for the Parquet files")
    p.add_argument("--model", required=True)
    p.add_argument("--budget", type=int)
    p.add_argument("--frames", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype")
    p.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--concurrency", type=int, default=1, help="Ray Data actors (model replicas)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor")
    p.add_argument("--batch-size", type=int, default=8, help="rows per predictor call")
    args = p.parse_args(argv)

    import ray

    from vidprune.pipeline.ray import connect_ray
    from vidprune.ray_data import VideoQAPredictor

    connect_ray(args.address, num_cpus=max(os.cpu_count() or 1, args.concurrency + 1))
    options = {k: v for k, v in {"budget": args.budget, "frames": args.frames, "device": args.device,
                                 "dtype": args.dtype, "max_new_tokens": args.max_new_tokens}.items() if v is not None}
    ds = ray.data.read_json(os.path.abspath(args.manifest))
    answers = ds.map_batches(VideoQAPredictor, fn_constructor_kwargs={"model": args.model, **options},
                             concurrency=args.concurrency, num_gpus=args.num_gpus, batch_size=args.batch_size)
    answers.write_parquet(os.path.abspath(args.out))
    print(f"answers written to {args.out}/ as Parquet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
