"""Whole-brain sampling time of the paper-size network: the GPU target, measurable before a model exists.

    python -m benchmarks.throughput [--device auto|cpu|cuda] [--precision auto|fp32|bf16|fp16] [--compile]
                                    [--sampler ancestral] [--steps 18] [--plane-sets axial axial+coronal+sagittal]
                                    [--repeats N] [--threads 2] [--smoke] [--results DIR]

Sampling time does not depend on the weights, so the network is the default ``NetworkConfig`` (the paper-size U-Net
for 128x128 slices) with seeded random weights: no trained paper-size model is needed to time it. The input is what
a participant run feeds the sampler: nilearn's MNI152NLin2009aSym T1w on the 2 mm model grid (99x117x95) and its
brain mask, every slice with brain along each plane, one sample (K = 1), the demo model's default sampler
(ancestral, 18 steps) unless told otherwise, along one plane and along three planes fused (``--plane-sets``; on the
2 mm grid three planes are 241 slices against one plane's 78), through the app's path: the network is written as a
model directory (``save_model_dir``, in a temporary folder) and synthesized with by ``Synthesizer.from_model_dir``,
built once as a participant run builds it (its ``InferenceDenoiser`` sets precision, memory layout and
compilation). Recorded per run: wall time of
``Synthesizer.synthesize`` (batch-size probe, warm-up evaluation and the copy back to the host included), the batch
size it chose, peak memory
(CUDA: peak allocated; CPU: peak resident set), and the network's FLOPs over that wall time (a lower bound on the
rate the network itself runs at), from the FLOPs of one network evaluation on one slice counted by
``torch.utils.flop_counter`` (convolutions, linears, attention). The first run of a process pays for cuDNN's
autotuning and, with ``--compile``, compilation: on CUDA the default is two runs of each plane set, and the second
is the steady-state figure. ``--smoke`` runs the tiny CPU configuration (4 mm grid, 64x64 slices, a 1 M-parameter
network, 2 steps) to check the path in seconds. Writes ``<results>/throughput[-compiled]-<machine>.{json,md}``
(default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.machine import command_line, machine_info, markdown_head, peak_memory_gb, write_results
from bids_jdam.config import PRECISIONS, JDAMConfig, SamplerConfig, small_config
from bids_jdam.data.slices import PLANE_AXES
from bids_jdam.data.template import load_template
from bids_jdam.diffusion.samplers import network_evaluations
from bids_jdam.methods import METHODS
from bids_jdam.methods.model_dir import save_model_dir
from bids_jdam.runtime.device import resolve_device
from bids_jdam.runtime.threads import configure_threads
from bids_jdam.synthesis.synthesizer import Synthesizer

RESULTS = Path(__file__).resolve().parent / "results"
WEIGHT_SEED = 0
THREE_PLANES = ("axial", "coronal", "sagittal")
TARGET = "a whole brain (all axial slices, one sample) in under 10 s on an H100 with the paper-size network"


def plane_set(text: str) -> tuple[str, ...]:
    """``axial`` or ``axial+coronal+sagittal``: the planes of one run."""
    planes = tuple(text.split("+"))
    unknown = [p for p in planes if p not in PLANE_AXES]
    if unknown or len(set(planes)) != len(planes):
        raise argparse.ArgumentTypeError(f"{text!r}: expected distinct planes out of {sorted(PLANE_AXES)} joined by +")
    return planes


def flops_per_slice_evaluation(denoiser: torch.nn.Module, slice_size: int) -> int:
    """FLOPs of one network evaluation on one slice (multiply-add = 2), counted on the CPU in float32."""
    x = torch.zeros(1, 1, slice_size, slice_size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        denoiser(x, torch.ones(1), torch.zeros_like(x))
    return int(counter.get_total_flops())


def random_weights_model_dir(cfg: JDAMConfig, path: Path) -> tuple[Path, int, int]:
    """JDAM's network for ``cfg`` with seeded random weights as a model directory; its parameters and FLOPs."""
    method = METHODS.named("jdam")
    torch.manual_seed(WEIGHT_SEED)
    network = method.build_network(cfg)
    flops = flops_per_slice_evaluation(method.as_model(network, cfg).eval(), cfg.grid.slice_size)
    card = {"name": "random weights", "trained_on": "nothing (seeded random weights, for timing only)"}
    save_model_dir(path, network, cfg, method, card)
    return path, sum(p.numel() for p in network.parameters()), flops


def timed_run(
    synthesizer: Synthesizer,
    sampler_cfg: SamplerConfig,
    planes: tuple[str, ...],
    batch_size: int | None,
    flops_per_evaluation: int,
) -> dict:
    """One whole-brain synthesis of the template T1w: seconds, slices, batch size, peak memory, FLOP rate."""
    device = synthesizer.device
    template = load_template(synthesizer.model.cfg.grid.spacing_mm)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = synthesizer.synthesize(
        template.t1, template.brain_mask, sampler_cfg, image="template", planes=planes, batch_size=batch_size
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    per_slice = network_evaluations(sampler_cfg.name, sampler_cfg.steps, sampler_cfg.corrector_steps)
    row = {
        "planes": list(planes),
        "slices": result.network_evaluations // per_slice,
        "network_evaluations": result.network_evaluations,
        "seconds": round(result.seconds, 2),
        "batch_size": result.batch_size,
        "peak_memory_gb": round(peak_memory_gb(device), 2),
        "network_tflops_per_second": round(
            result.network_evaluations * flops_per_evaluation / result.seconds / 1e12, 3
        ),
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--sampler", default="ancestral")
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument(
        "--plane-sets",
        nargs="+",
        type=plane_set,
        default=[("axial",), THREE_PLANES],
        metavar="PLANE[+PLANE...]",
        help="planes sampled and fused in one run (default: axial, and axial+coronal+sagittal)",
    )
    parser.add_argument("--repeats", type=int, help="runs of each plane set (default: 2 on CUDA, 1 on CPU)")
    parser.add_argument("--batch-size", type=int, help="slices per network call (default: bids-jdam's choice)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny network on the 4 mm grid, 2 steps")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = command_line("benchmarks.throughput", argv)
    configure_threads(args.threads)
    device = resolve_device(args.device)
    machine = machine_info(threads=args.threads, device=str(device))  # before the runs: the load they start under
    cfg = small_config() if args.smoke else JDAMConfig()
    steps = 2 if args.smoke else args.steps
    sampler_cfg = SamplerConfig(name=args.sampler, steps=steps, corrector_steps=1 if args.sampler == "pc" else 0)

    with tempfile.TemporaryDirectory(prefix="bids-jdam-throughput-") as folder:
        model_dir, parameters, flops = random_weights_model_dir(cfg, Path(folder) / "model")
        synthesizer = Synthesizer.from_model_dir(model_dir, device, args.precision, args.compile)
    repeats = args.repeats or (2 if device.type == "cuda" else 1)
    runs = [
        timed_run(synthesizer, sampler_cfg, planes, args.batch_size, flops)
        for planes in args.plane_sets
        for _ in range(repeats)
    ]
    report = {
        "command": command,
        "machine": machine,
        "target": TARGET,
        "network": "smoke (small_config)" if args.smoke else "paper-size (NetworkConfig defaults), random weights",
        "network_config": cfg.to_dict()["network"],
        "parameters": parameters,
        "slice_size": cfg.grid.slice_size,
        "grid_spacing_mm": cfg.grid.spacing_mm,
        "gflop_per_slice_evaluation": round(flops / 1e9, 3),
        "sampler": args.sampler,
        "steps": steps,
        "network_evaluations_per_slice": network_evaluations(args.sampler, steps, sampler_cfg.corrector_steps),
        "precision": synthesizer.precision,
        "compiled": args.compile,
        "runs": runs,
    }
    write_results(args.results, "throughput-compiled" if args.compile else "throughput", report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [
        *markdown_head("Whole-brain sampling time of the paper-size network", report),
        f"Network: {report['network']}, {report['parameters'] / 1e6:.1f} M parameters, "
        f"{report['gflop_per_slice_evaluation']:.1f} GFLOP per {report['slice_size']}x{report['slice_size']} slice "
        f"per evaluation; precision {report['precision']}{', compiled' if report['compiled'] else ''}.  ",
        f"Sampler: {report['sampler']}, {report['steps']} steps ({report['network_evaluations_per_slice']} network "
        f"evaluations per slice), one sample; input nilearn's MNI152NLin2009aSym T1w on the "
        f"{report['grid_spacing_mm']:g} mm grid.  ",
        f"Target ({report['target']}).",
        "",
        "| run | planes | slices | seconds | batch | peak memory GB | network TFLOP over the run's seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(report["runs"], 1):
        lines.append(
            f"| {i} | {'+'.join(r['planes'])} | {r['slices']} | {r['seconds']:.1f} | {r['batch_size']} | "
            f"{r['peak_memory_gb']:.2f} | {r['network_tflops_per_second']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
