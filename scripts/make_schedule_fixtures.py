#!/usr/bin/python3
"""Generate tests/fixtures/sched_*.txt: learning-rate sequences from torch.optim.lr_scheduler.

tests/test_schedule.c reads each fixture, builds the same nn_sched_config and
compares nn_sched_lr(cfg, st, epoch, step) with the learning rate PyTorch used
for every optimizer step (relative error <= 1e-6).

The training loop being imitated (one dummy parameter, plain SGD):

    for step in range(STEPS):                      # epoch = step // STEPS_PER_EPOCH
        lr = optimizer.param_groups[0]['lr']       # <- recorded
        optimizer.step()
        per-step schedulers (OneCycleLR, the LinearLR warm-up).step()
        if end of epoch: per-epoch scheduler.step()    (ReduceLROnPlateau: .step(metric))

nnopt's linear warm-up MULTIPLIES whatever the schedule gives by
LinearLR(start_factor, end_factor=1, total_iters=warmup_steps)'s factor, stepped
once per optimizer step. That product is what the warm-up fixtures hold: the
schedule runs alone on one optimizer, LinearLR alone on another with lr 1 (its
lr is then the factor), and the two are multiplied. Where the schedule is
multiplicative in PyTorch's chainable form (StepLR, CosineAnnealingLR with
eta_min = 0, no lr), the script also chains both schedulers on ONE optimizer,
as a PyTorch user would, and asserts that it gives the same numbers.

Every float option is rounded to float32 first, because nn_sched_config holds
floats: PyTorch then sees exactly the values the C test passes.

Fixture format (text, '#' comments):
    config kind=<name> base_lr=<v> <field>=<v> ...   nn_sched_config fields
    steps_per_epoch <n>
    metrics <m0> <m1> ...                            plateau: one per epoch
    <step> <epoch> <lr>                              one line per optimizer step
sched_defaults.txt instead lists PyTorch's default for each option:
    default <kind> <field> <value>

Run with Debian's torch:  /usr/bin/python3 scripts/make_schedule_fixtures.py [-o DIR]
"""

import argparse
import inspect
import os
import struct

from pydeps import require  # says how to install a missing module

require("torch")
import torch  # noqa: E402
from torch.optim import lr_scheduler as S  # noqa: E402


def f32(x):
    """x rounded to float32, as a Python float."""
    return struct.unpack("f", struct.pack("f", x))[0]


def make_opt(lr):
    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.zeros(1)
    return torch.optim.SGD([p], lr=lr)


# name -> (kind, options as written in the fixture, steps, steps per epoch, metrics)
CASES = {
    "constant_warmup": ("constant", dict(base_lr=0.1, warmup_steps=7), 30, 5, None),
    "step": ("step", dict(base_lr=0.1, step_size=3, gamma=0.5), 60, 5, None),
    "step_warmup": ("step", dict(base_lr=0.1, step_size=2, gamma=0.1, warmup_steps=12,
                                 warmup_start_factor=0.1), 40, 5, None),
    "multistep": ("multistep", dict(base_lr=0.1, milestones=[2, 5, 5, 9], gamma=0.5), 60, 5,
                  None),
    "exponential": ("exponential", dict(base_lr=0.1, gamma=0.8), 60, 5, None),
    "cosine": ("cosine", dict(base_lr=0.1, t_max=5, eta_min=0.001), 60, 5, None),
    "cosine_warmup": ("cosine", dict(base_lr=0.05, t_max=10, warmup_steps=8,
                                     warmup_start_factor=0.25), 60, 5, None),
    "cosine_restarts": ("cosine_restarts", dict(base_lr=0.1, t_0=2, t_mult=2, eta_min=0.0005),
                        80, 5, None),
    "cosine_restarts1": ("cosine_restarts", dict(base_lr=0.1, t_0=3, t_mult=1), 60, 5, None),
    "onecycle": ("onecycle", dict(base_lr=0.1, total_steps=60), 60, 5, None),
    "onecycle_odd": ("onecycle", dict(base_lr=0.2, total_steps=37, pct_start=0.25, div_factor=10,
                                      final_div_factor=100), 37, 4, None),
    "plateau": ("plateau", dict(base_lr=0.1, factor=0.5, patience=2, threshold=0.01, cooldown=1,
                                min_lr=0.01), 100, 5,
                [1.0, 0.9, 0.95, 0.9, 0.899, 0.85, 0.86, 0.87, 0.88, 0.849, 0.85, 0.7, 0.7, 0.7,
                 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]),
}


def opt_f(o, key, default):
    return f32(o.get(key, default))


def make_scheduler(kind, o, opt):
    """The torch scheduler for kind (None for constant) and whether it steps per step."""
    if kind == "constant":
        return None, False
    if kind == "step":
        return S.StepLR(opt, step_size=o["step_size"], gamma=opt_f(o, "gamma", 0.1)), False
    if kind == "multistep":
        return S.MultiStepLR(opt, milestones=o["milestones"], gamma=opt_f(o, "gamma", 0.1)), False
    if kind == "exponential":
        return S.ExponentialLR(opt, gamma=f32(o["gamma"])), False
    if kind == "cosine":
        return S.CosineAnnealingLR(opt, T_max=o["t_max"], eta_min=opt_f(o, "eta_min", 0.0)), False
    if kind == "cosine_restarts":
        return S.CosineAnnealingWarmRestarts(opt, T_0=o["t_0"], T_mult=o.get("t_mult", 1),
                                             eta_min=opt_f(o, "eta_min", 0.0)), False
    if kind == "onecycle":
        return S.OneCycleLR(opt, max_lr=f32(o["base_lr"]), total_steps=o["total_steps"],
                            pct_start=opt_f(o, "pct_start", 0.3), anneal_strategy="cos",
                            cycle_momentum=False, div_factor=opt_f(o, "div_factor", 25.0),
                            final_div_factor=opt_f(o, "final_div_factor", 1e4),
                            three_phase=False), True
    if kind == "plateau":
        return S.ReduceLROnPlateau(opt, mode="min", factor=opt_f(o, "factor", 0.1),
                                   patience=o.get("patience", 10),
                                   threshold=opt_f(o, "threshold", 1e-4), threshold_mode="rel",
                                   cooldown=o.get("cooldown", 0),
                                   min_lr=opt_f(o, "min_lr", 0.0)), False
    raise ValueError(kind)


def run(scheds, opt, steps, spe, metrics):
    """Learning rates used by each optimizer step; scheds: [(scheduler, per_step)]."""
    lrs = []
    for step in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        for s, per_step in scheds:
            if s is not None and per_step:
                s.step()
        if (step + 1) % spe == 0:
            for s, per_step in scheds:
                if s is None or per_step:
                    continue
                if isinstance(s, S.ReduceLROnPlateau):
                    s.step(metrics[step // spe])
                else:
                    s.step()
    return lrs


def warmup(o):
    w = o.get("warmup_steps", 0)
    return w, opt_f(o, "warmup_start_factor", 1.0 / 3.0)


def sequence(kind, o, steps, spe, metrics):
    opt = make_opt(f32(o["base_lr"]))
    sched = make_scheduler(kind, o, opt)
    lrs = run([sched], opt, steps, spe, metrics)
    w, sf = warmup(o)
    if w == 0:
        return lrs
    fopt = make_opt(1.0)
    lin = S.LinearLR(fopt, start_factor=sf, end_factor=1.0, total_iters=w)
    factors = run([(lin, True)], fopt, steps, spe, metrics)
    product = [a * b for a, b in zip(lrs, factors)]
    if kind == "step" or (kind == "cosine" and o.get("eta_min", 0) == 0) or kind == "constant":
        copt = make_opt(f32(o["base_lr"]))
        lin = S.LinearLR(copt, start_factor=sf, end_factor=1.0, total_iters=w)
        chained = run([(lin, True), make_scheduler(kind, o, copt)], copt, steps, spe, metrics)
        for a, b in zip(chained, product):
            assert abs(a - b) <= 1e-12 * max(abs(a), abs(b)), (kind, a, b)
    return product


def fmt_val(v):
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return repr(v)


def write_case(path, name, kind, o, steps, spe, metrics):
    lrs = sequence(kind, o, steps, spe, metrics)
    with open(path, "w") as f:
        f.write("# %s - generated by scripts/make_schedule_fixtures.py; do not edit.\n"
                % os.path.basename(path))
        f.write("# PyTorch %s; float options rounded to float32; lr used by each optimizer step.\n"
                % torch.__version__)
        f.write("config kind=%s %s\n" % (kind, " ".join("%s=%s" % (k, fmt_val(v))
                                                         for k, v in o.items())))
        f.write("steps_per_epoch %d\n" % spe)
        if metrics:
            f.write("metrics %s\n" % " ".join(repr(m) for m in metrics))
        f.write("# step epoch lr\n")
        for step, lr in enumerate(lrs):
            f.write("%d %d %.17g\n" % (step, step // spe, lr))


def default(cls, arg):
    return inspect.signature(cls.__init__).parameters[arg].default


def write_defaults(path):
    rows = [
        ("step", "gamma", default(S.StepLR, "gamma")),
        ("multistep", "gamma", default(S.MultiStepLR, "gamma")),
        ("cosine", "eta_min", default(S.CosineAnnealingLR, "eta_min")),
        ("cosine_restarts", "t_mult", default(S.CosineAnnealingWarmRestarts, "T_mult")),
        ("cosine_restarts", "eta_min", default(S.CosineAnnealingWarmRestarts, "eta_min")),
        ("onecycle", "pct_start", default(S.OneCycleLR, "pct_start")),
        ("onecycle", "div_factor", default(S.OneCycleLR, "div_factor")),
        ("onecycle", "final_div_factor", default(S.OneCycleLR, "final_div_factor")),
        ("plateau", "factor", default(S.ReduceLROnPlateau, "factor")),
        ("plateau", "patience", default(S.ReduceLROnPlateau, "patience")),
        ("plateau", "threshold", default(S.ReduceLROnPlateau, "threshold")),
        ("plateau", "cooldown", default(S.ReduceLROnPlateau, "cooldown")),
        ("plateau", "min_lr", default(S.ReduceLROnPlateau, "min_lr")),
        ("constant", "warmup_start_factor", default(S.LinearLR, "start_factor")),
    ]
    with open(path, "w") as f:
        f.write("# sched_defaults.txt - generated by scripts/make_schedule_fixtures.py; "
                "do not edit.\n")
        f.write("# PyTorch %s constructor defaults (warmup_start_factor: LinearLR start_factor).\n"
                % torch.__version__)
        for kind, field, v in rows:
            f.write("default %s %s %r\n" % (kind, field, float(v)))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--outdir", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()
    torch.set_default_dtype(torch.float32)
    for name, (kind, o, steps, spe, metrics) in CASES.items():
        path = os.path.join(args.outdir, "sched_%s.txt" % name)
        write_case(path, name, kind, o, steps, spe, metrics)
        print("wrote", path)
    path = os.path.join(args.outdir, "sched_defaults.txt")
    write_defaults(path)
    print("wrote", path)


if __name__ == "__main__":
    main()
