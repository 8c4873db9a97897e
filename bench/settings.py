"""The bench's options, parsed once in __main__ and passed down."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.peers import PEERS

DEFAULT_SIZES = (1000, 10000)
LARGE = 100000


@dataclass(frozen=True)
class BenchSettings:
    sizes: tuple[int, ...]
    concurrency: tuple[int, ...]
    peer_concurrency_max: int
    universal_concurrency_max: int
    cell_timeout: float
    duration: float
    queries: int
    seed: int
    out: Path
    cache_dir: Path
    peers: tuple[str, ...]
    store: str
    rest_stores: tuple[str, ...]
    rest_duration: float
    rest_items: int
    rest_concurrency: int
    visible_samples: int
    variants: int
    gate_variants: int
    netns: bool
    smoke: bool
    command: str


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v.replace("_", "")) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("values must be positive integers")
    return values


def _names(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        if text == "none":
            return ()
        names = tuple(v.strip() for v in text.split(",") if v.strip())
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)} or none"
            )
        return names

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Our MWL SCP and REST API measured beside DCMTK wlmscpfs and Orthanc on the same data.",
    )
    p.add_argument("--sizes", type=_ints, default=DEFAULT_SIZES, help="worklist sizes N (default 1000,10000)")
    p.add_argument("--large", action="store_true", help=f"add N={LARGE:,} (the peers take minutes there)")
    p.add_argument(
        "--concurrency", type=_ints, default=(1, 8, 32), help="concurrent modalities (default 1,8,32)"
    )
    p.add_argument(
        "--peer-concurrency-max", type=int, default=8, help="peers run only up to this concurrency"
    )
    p.add_argument(
        "--universal-concurrency-max", type=int, default=8, help="universal query up to this concurrency"
    )
    p.add_argument(
        "--cell-timeout", type=float, default=120.0, help="seconds a cell may run past --duration (then cut)"
    )
    p.add_argument(
        "--duration", type=float, default=5.0, help="seconds per cell (at least one query per client)"
    )
    p.add_argument("--queries", type=int, default=1000, help="at most this many queries per cell")
    p.add_argument("--seed", type=int, default=20251128)
    p.add_argument("--out", type=Path, default=Path("results"), help="report folder (default results/)")
    p.add_argument("--cache-dir", type=Path, default=None, help="generated data cache (default <out>/cache)")
    p.add_argument("--peers", type=_names(PEERS), default=PEERS, help="wlmscpfs,orthanc (default) or none")
    p.add_argument(
        "--store", choices=("postgresql", "sqlite"), default="postgresql", help="our store for C-FIND"
    )
    p.add_argument("--rest-stores", type=_names(("sqlite", "postgresql")), default=("sqlite", "postgresql"))
    p.add_argument("--rest-duration", type=float, default=10.0, help="seconds of REST creates per store")
    p.add_argument("--rest-items", type=int, default=5000, help="at most this many REST creates per store")
    p.add_argument("--rest-concurrency", type=int, default=8)
    p.add_argument("--visible-samples", type=int, default=50, help="create-to-visible samples per N")
    p.add_argument("--variants", type=int, default=16, help="concrete instances per query kind")
    p.add_argument("--gate-variants", type=int, default=3, help="instances per query kind in the gate")
    p.add_argument(
        "--no-netns",
        action="store_true",
        help="do not enter a private network namespace (then the peers, which bind every interface, are off)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="tiny N, short cells: a few seconds, for the test suite"
    )
    return p


def parse(argv: list[str] | None, command: str) -> BenchSettings:
    args = parser().parse_args(argv)
    sizes = tuple(args.sizes) + ((LARGE,) if args.large and LARGE not in args.sizes else ())
    settings = BenchSettings(
        sizes=sizes,
        concurrency=tuple(args.concurrency),
        peer_concurrency_max=args.peer_concurrency_max,
        universal_concurrency_max=args.universal_concurrency_max,
        cell_timeout=args.cell_timeout,
        duration=args.duration,
        queries=args.queries,
        seed=args.seed,
        out=args.out,
        cache_dir=args.cache_dir or args.out / "cache",
        peers=tuple(args.peers),
        store=args.store,
        rest_stores=tuple(args.rest_stores),
        rest_duration=args.rest_duration,
        rest_items=args.rest_items,
        rest_concurrency=args.rest_concurrency,
        visible_samples=args.visible_samples,
        variants=args.variants,
        gate_variants=args.gate_variants,
        netns=not args.no_netns,
        smoke=args.smoke,
        command=command,
    )
    if args.smoke:
        settings = BenchSettings(
            **{
                **settings.__dict__,
                "sizes": (100,),
                "concurrency": (1, 2),
                "duration": 0.5,
                "queries": 40,
                "store": "sqlite",
                "rest_stores": ("sqlite",),
                "rest_duration": 1.0,
                "rest_items": 100,
                "visible_samples": 5,
                "variants": 4,
                "gate_variants": 2,
            }
        )
    return settings
