#!/usr/bin/env python3
"""Optuna driving `nnopt train` over an nnopt search space: the baseline that
`nnopt search` is measured against (issue 18, bench/search_compare.sh).

    .venv-search/bin/python bench/optuna_search.py spaces/fmnist_quick.space --budget 600 --threads 2

Reads a space file (docs/search.md: [search] model, objectives, val,
train_limit, min_epochs, eta, constraint; [model] parameters; every other
section recipe keys; values `choice ...`, `int LO HI [log] [step S]`,
`float LO HI [log]` or one fixed word; `... if KEY == V` / `if KEY in V1,V2`;
`KEY@tag` variants) and maps it, in file order, onto Optuna's define-by-run
API (suggest_categorical, suggest_int with log/step, suggest_float with log),
so that a condition sees the choices drawn above it. Each trial writes its
recipe file (the drawn recipe keys and `[model] params = K=V,..`) and runs

    nnopt train MODEL --config trial_N.ini --data DIR --val N [--train-limit N]
                      --test-limit 1 --threads T --json --quiet

reading the JSON line of every epoch as it comes: trial.report(val_accuracy,
epoch), and when trial.should_prune() the process is killed and the trial
pruned (not after the trial's last epoch: as with nnopt's pruners, a trial
that trained in full is complete). `nnopt search` evaluates no test set while
it searches; `nnopt train` always does, so its test set is cut to one image
(--test-limit). The training
set, the validation split, the seed of every trial (`[train] seed`, default
1) and the epochs are those `nnopt search` uses for the same space.

Sampler: TPESampler(multivariate=True, seed=--seed), the sampler nnopt's `tpe`
follows. Pruner: HyperbandPruner(min_resource=min_epochs,
max_resource=the space's epochs, reduction_factor=eta) (--pruner none: none).
--budget is a hard wall like `nnopt search --budget`: no trial starts after
it, and the trial still training is killed then (counted `stopped`, not
pruned; Optuna records it as pruned).

Constraints (`[search] constraint = latency_ms <= ...`) are measured by
`nnopt search` before training; `nnopt train` cannot check them, so a space
with constraints is refused unless --ignore-constraints (then they are
ignored, and the search is not the same as nnopt's).

At the end prints one JSON object on stdout (progress goes to stderr): the best
validation accuracy (a fraction, as `nnopt report --json`) and its
parameters, the trials of this run by state, the total wall time, and the
per-trial overhead of the complete and pruned trials: the trial's wall time
(Optuna's start to completion: sampling, the process, the pruner, the
storage) minus the training time `nnopt train` reports (the epochs' `seconds`
+ `eval_seconds`), mean and median; `process_overhead_s` is the part spent in
the `nnopt train` process outside training (start, reading the data, building
the model), `optuna_overhead_s` the rest; `untrained_per_trial_s` is all
that was not training, start-up and the gaps between trials included, per
trial: (wall time - `train_seconds`, the training time of the trials not
stopped by the budget, - `stopped_seconds`, the wall time of those stopped) /
the trials not stopped.

Needs Optuna (PyPI): python3 -m venv .venv-search && .venv-search/bin/pip install optuna
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

try:
    import optuna
except ImportError as e:
    sys.exit(f"optuna_search.py: needs Optuna ({e}); install it with\n"
             f"    python3 -m venv .venv-search && .venv-search/bin/pip install optuna\n"
             f"and run this script with .venv-search/bin/python")

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
METRICS = ("val_accuracy", "val_loss", "latency_ms", "latency_batch_ms", "train_seconds",
           "params", "flops", "memory_mb")
TRAIN_DEFAULT_EPOCHS = 5  # nnopt train's --epochs default


class SpaceError(Exception):
    pass


def split_words(s):
    """As space.c: words separated by blanks and commas."""
    return [w for w in re.split(r"[ \t,]+", s) if w]


def strip_comment(line):
    """A '#' or ';' after a blank starts a comment (nnopt's reader and inih)."""
    for i in range(1, len(line)):
        if line[i] in "#;" and line[i - 1] in " \t":
            return line[:i]
    return line


def number(s):
    try:
        v = float(s)
    except ValueError:
        return None
    return v if v == v and abs(v) != float("inf") else None


class Param:
    """One parameter of the space: name 'section.key[@tag]', key 'section.key'."""

    def __init__(self, section, key, line):
        self.name = f"{section}.{key}"
        self.key = self.name.split("@")[0]
        self.line = line
        self.kind = None  # choice, int, float, fixed
        self.choices = []
        self.lo = self.hi = None
        self.log = False
        self.step = 1
        self.cond = None  # index of the choice parameter it depends on
        self.cond_values = []


class Space:
    def __init__(self, path):
        self.path = path
        self.model = None
        self.objectives = []
        self.constraints = []
        self.val = 0
        self.train_limit = 0
        self.min_epochs = 1
        self.eta = 3
        self.params = []
        self.parse()

    def fail(self, line, msg):
        raise SpaceError(f"{self.path}:{line}: {msg}")

    def find(self, name):
        for i, p in enumerate(self.params):
            if p.name == name:
                return i
        return -1

    def parse(self):
        with open(self.path, encoding="utf-8") as f:
            text = f.read()
        section = None
        seen = {}
        for n, raw in enumerate(text.split("\n"), 1):
            line = strip_comment(raw.strip()).strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                if not line.endswith("]"):
                    self.fail(n, "expected '[section]'")
                section = line[1:-1].strip()
                if not re.fullmatch(r"[A-Za-z0-9_]+", section):
                    self.fail(n, f"bad section [{section}]")
                continue
            m = re.match(r"([^=:]+)[=:](.*)$", line)
            if not m:
                self.fail(n, "expected '[section]' or 'key = value'")
            key, value = m.group(1).strip(), m.group(2).strip()
            if section is None:
                self.fail(n, f"key '{key}' before any [section]")
            if section == "search":
                if key in seen and key != "constraint":
                    self.fail(n, f"[search] {key} is set again (first on line {seen[key]})")
                seen[key] = n
                self.search_key(n, key, value)
            else:
                if not re.fullmatch(r"[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", key):
                    self.fail(n, f"bad key [{section}] {key} (letters, digits and _, and one @variant)")
                self.param(n, section, key, value)
        if not self.model:
            raise SpaceError(f"{self.path}: [search] model = MODEL_FILE is missing")
        if not self.objectives:
            self.objectives = [("maximize", "val_accuracy")]

    def resolve(self, value):
        if value.startswith("/") or "/" not in self.path:
            return value
        return os.path.join(os.path.dirname(self.path), value)

    def int_setting(self, n, key, value, lo):
        v = number(value)
        if v is None or v != int(v) or v < lo:
            self.fail(n, f"{key}: expected an integer >= {lo}, got '{value}'")
        return int(v)

    def search_key(self, n, key, value):
        if key == "model":
            self.model = self.resolve(value)
        elif key == "objectives":
            w = split_words(value)
            if not w or len(w) % 2:
                self.fail(n, f"objectives: expected 'maximize METRIC[, minimize METRIC ...]', got '{value}'")
            self.objectives = [(w[i], w[i + 1]) for i in range(0, len(w), 2)]
            for goal, metric in self.objectives:
                if goal not in ("maximize", "minimize") or metric not in METRICS:
                    self.fail(n, f"objectives: '{goal} {metric}' is not 'maximize|minimize METRIC'")
        elif key == "constraint":
            self.constraints.append(value)
        elif key == "val":
            self.val = self.int_setting(n, key, value, 1)
        elif key == "train_limit":
            self.train_limit = self.int_setting(n, key, value, 0)
        elif key == "min_epochs":
            self.min_epochs = self.int_setting(n, key, value, 1)
        elif key == "eta":
            self.eta = self.int_setting(n, key, value, 2)
        else:
            self.fail(n, f"unknown key '{key}' in [search] (expected model, objectives, constraint, "
                         f"val, train_limit, min_epochs or eta)")

    def param(self, n, section, key, value):
        p = Param(section, key, n)
        if self.find(p.name) >= 0:
            self.fail(n, f"[{section}] {key} is set again (first on line {self.params[self.find(p.name)].line})")
        if p.key.startswith("data.") or p.key == "model.params":
            self.fail(n, f"{p.name} is not a recipe key a search can set (the search owns the data "
                         f"split: val and train_limit go in [search])")
        at = value.find(" if ")
        if at >= 0:
            w = split_words(value[at + 4:])
            if len(w) < 3 or w[1] not in ("==", "in") or (w[1] == "==" and len(w) != 3):
                self.fail(n, f"{p.name}: expected 'if KEY == VALUE' or 'if KEY in VALUE,VALUE...'")
            full = w[0] if "." in w[0] else f"{section}.{w[0]}"
            c = self.find(full)
            if c < 0 or self.params[c].kind != "choice":
                self.fail(n, f"{p.name}: the condition's {full} must be a choice defined above")
            for v in w[2:]:
                if v not in self.params[c].choices:
                    self.fail(n, f"{p.name}: the condition's value '{v}' is not one of {full}'s choices")
            p.cond, p.cond_values = c, w[2:]
            value = value[:at]
        w = split_words(value)
        if not w:
            self.fail(n, f"[{section}] {key}: no value")
        if w[0] == "choice":
            if len(w) < 2 or len(set(w[1:])) != len(w) - 1:
                self.fail(n, f"{p.name}: expected 'choice A B ...' with distinct words")
            p.kind, p.choices = "choice", w[1:]
        elif w[0] in ("int", "float"):
            p.kind = w[0]
            lo, hi = (number(w[1]), number(w[2])) if len(w) >= 3 else (None, None)
            if lo is None or hi is None or lo > hi:
                self.fail(n, f"{p.name}: expected '{w[0]} LO HI [log]' with LO <= HI")
            p.lo, p.hi = lo, hi
            i = 3
            while i < len(w):
                if w[i] == "log":
                    p.log = True
                elif p.kind == "int" and w[i] == "step" and i + 1 < len(w) and number(w[i + 1]):
                    p.step = int(number(w[i + 1]))
                    i += 1
                else:
                    self.fail(n, f"{p.name}: unexpected '{w[i]}'")
                i += 1
            if p.kind == "int":
                if lo != int(lo) or hi != int(hi):
                    self.fail(n, f"{p.name}: int bounds must be integers")
                p.lo, p.hi = int(lo), int(hi)
            if p.log and not p.lo > 0:
                self.fail(n, f"{p.name}: a log range needs LO > 0")
            if p.log and p.step != 1:
                self.fail(n, f"{p.name}: log and step cannot be combined")
        else:
            if len(w) != 1:
                self.fail(n, f"{p.name}: '{value}' is neither 'choice ...', 'int LO HI', "
                             f"'float LO HI' nor one fixed value")
            p.kind, p.choices = "fixed", w
        if p.name != p.key and p.cond is None:
            self.fail(n, f"{p.name}: a variant (@) needs an 'if' condition saying when it applies")
        self.params.append(p)

    def max_epochs(self):
        """The full training, as nnopt search takes it: train.epochs's largest value."""
        best = None
        for p in self.params:
            if p.key != "train.epochs":
                continue
            if p.kind in ("int", "float"):
                v = int(p.hi)
            else:
                v = max(int(float(c)) for c in p.choices)
            best = v if best is None else max(best, v)
        return best if best is not None else TRAIN_DEFAULT_EPOCHS

    def sets(self, key):
        return any(p.key == key for p in self.params)


def value_text(p, v):
    if p.kind == "float":
        return repr(float(v))
    return str(v)


def draw(space, trial):
    """The trial's values in file order: {param name: text} of the active ones."""
    values = {}
    for p in space.params:
        if p.cond is not None:
            c = space.params[p.cond]
            if values.get(c.name) not in p.cond_values:
                continue
        if p.kind == "fixed":
            v = p.choices[0]
        elif p.kind == "choice":
            v = trial.suggest_categorical(p.name, p.choices)
        elif p.kind == "int":
            v = trial.suggest_int(p.name, p.lo, p.hi, step=p.step, log=p.log)
        else:
            v = trial.suggest_float(p.name, p.lo, p.hi, log=p.log)
        values[p.name] = value_text(p, v)
    return values


def recipe_text(space, values, header):
    by_key = {}
    for p in space.params:
        if p.name not in values:
            continue
        if p.key in by_key:
            raise ValueError(f"{space.path}:{p.line}: {by_key[p.key][0]} and {p.name} both apply to "
                             f"one trial (their conditions overlap)")
        by_key[p.key] = (p.name, values[p.name])
    sections = {}
    model = []
    for key, (_, v) in by_key.items():
        section, k = key.split(".", 1)
        if section == "model":
            model.append(f"{k}={v}")
        else:
            sections.setdefault(section, []).append(f"{k} = {v}")
    lines = [f"# {header}"]
    if model:
        lines += ["[model]", "params = " + ",".join(model)]
    for section, keys in sections.items():
        lines += [f"[{section}]"] + keys
    return "\n".join(lines) + "\n"


def parse_budget(s):
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(s|m|h)?", s)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a time such as 30m, 2h or 600, got '{s}'")
    return float(m.group(1)) * {None: 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def summary(values):
    if not values:
        return {"mean": None, "median": None, "trials": 0}
    return {"mean": round(statistics.mean(values), 4), "median": round(statistics.median(values), 4),
            "trials": len(values)}


class Runner:
    """The objective: one `nnopt train` process per trial."""

    def __init__(self, args, space, workdir, deadline):
        self.args = args
        self.space = space
        self.workdir = workdir
        self.deadline = deadline
        self.failed_in_a_row = 0
        self.proc = None

    def command(self, ini):
        a, sp = self.args, self.space
        cmd = [a.nnopt, "train", sp.model, "--config", ini, "--data", a.data, "--val", str(sp.val),
               "--test-limit", str(a.test_limit), "--json", "--quiet"]
        if sp.train_limit:
            cmd += ["--train-limit", str(sp.train_limit)]
        if not sp.sets("train.threads"):  # as nnopt search: the space's threads win
            cmd += ["--threads", str(a.threads)]
        return cmd

    def stop(self, proc):
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def __call__(self, trial):
        sp = self.space
        values = draw(sp, trial)
        full = next((int(float(values[p.name])) for p in sp.params
                     if p.key == "train.epochs" and p.name in values), TRAIN_DEFAULT_EPOCHS)
        trial.set_user_attr("config", values)
        ini = os.path.join(self.workdir, f"trial_{trial.number:06d}.ini")
        errlog = os.path.join(self.workdir, f"trial_{trial.number:06d}.err")
        with open(ini, "w", encoding="utf-8") as f:
            f.write(recipe_text(sp, values, f"trial {trial.number} of optuna_search.py, space {sp.path}"))
        train_s = 0.0
        epochs = 0
        acc = None
        pruned = False
        over = threading.Event()
        t0 = time.time()
        with open(errlog, "w", encoding="utf-8") as err:
            proc = subprocess.Popen(self.command(ini), stdout=subprocess.PIPE, stderr=err, text=True,
                                    bufsize=1)
            self.proc = proc

            def budget_over():
                if proc.poll() is None:
                    over.set()
                    self.stop(proc)
            timer = threading.Timer(max(0.0, self.deadline - time.time()), budget_over)
            timer.daemon = True
            timer.start()
            try:
                for line in proc.stdout:
                    line = line.strip()
                    if not line.startswith("{"):
                        continue
                    r = json.loads(line)
                    epochs = int(r["epoch"])
                    train_s += float(r["seconds"]) + float(r["eval_seconds"])
                    acc = float(r["val_accuracy"]) / 100.0
                    trial.report(acc, epochs)
                    # as nnopt's pruners: nothing is pruned once it trained in full
                    if self.args.pruner != "none" and epochs < full and trial.should_prune():
                        pruned = True
                        self.stop(proc)
                        break
                proc.wait()
            finally:
                timer.cancel()
                self.stop(proc)
                proc.stdout.close()
                self.proc = None
        process_s = time.time() - t0
        trial.set_user_attr("train_seconds", train_s)
        trial.set_user_attr("process_seconds", process_s)
        trial.set_user_attr("epochs", epochs)
        # killed by the budget after its last epoch: it trained in full
        state = "pruned" if pruned else "stopped" if over.is_set() and epochs < full else None
        if state is None and proc.returncode != 0 and not (over.is_set() and epochs >= full):
            with open(errlog, encoding="utf-8", errors="replace") as f:
                lines = [x for x in f.read().splitlines() if x.strip()]
            why = lines[-1] if lines else f"exit status {proc.returncode}"
            trial.set_user_attr("error", why)
            self.failed_in_a_row += 1
            log(f"trial {trial.number} failed: {why} ({errlog})")
            raise RuntimeError(why)
        self.failed_in_a_row = 0
        show = f"val {100 * acc:6.2f}% ({epochs} ep)" if acc is not None else "no epoch"
        if state:
            trial.set_user_attr("state", state)
            log(f"trial {trial.number} {state:8s} {show}  {process_s:.1f} s")
            raise optuna.TrialPruned()
        if acc is None:
            trial.set_user_attr("error", "no epoch reported")
            raise RuntimeError("no epoch reported")
        log(f"trial {trial.number} complete {show}  {process_s:.1f} s")
        return acc


def log(msg):
    print(f"optuna_search: {msg}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(
        description="Optuna (TPE + Hyperband) driving `nnopt train` trials over an nnopt search "
                    "space, under a wall-time budget; prints one JSON summary (best validation "
                    "accuracy, trials by state, per-trial overhead). The baseline of "
                    "bench/search_compare.sh.",
        epilog="Constraints of the space (latency_ms <= ..., params <= ...) are measured by "
               "`nnopt search` before training and cannot be checked through `nnopt train`: a "
               "space with a constraint is refused unless --ignore-constraints, which drops them "
               "(the search then differs from nnopt's).")
    ap.add_argument("space", help="nnopt search space file (docs/search.md)")
    ap.add_argument("--budget", type=parse_budget, default=None,
                    help="wall time: 600 (seconds), 30m, 2h; no trial starts after it and the one "
                         "training is killed (default: none; then give --trials)")
    ap.add_argument("--trials", type=int, default=None, help="stop after N trials of this run")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="nnopt train --threads (default: every core), unless the space sets train.threads")
    ap.add_argument("--seed", type=int, default=1, help="TPESampler's seed (default 1)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="IDX data set directory")
    ap.add_argument("--nnopt", default=os.path.join(ROOT, "build", "nnopt"),
                    help="the nnopt binary (default: build/nnopt of this checkout)")
    ap.add_argument("--pruner", choices=("hyperband", "none"), default="hyperband",
                    help="HyperbandPruner(min_epochs, epochs, eta) (default) or none")
    ap.add_argument("--storage", default=None,
                    help="Optuna storage, e.g. sqlite:///optuna.db (default: in memory); an existing "
                         "study of the same name is continued, the summary covers this run's trials")
    ap.add_argument("--study-name", default=None, help="Optuna study name (default: the space's name)")
    ap.add_argument("--workdir", default=None,
                    help="where the trials' recipe files and stderr logs go (default: a temporary "
                         "folder, removed at the end)")
    ap.add_argument("--test-limit", type=int, default=1,
                    help="nnopt train --test-limit (default 1: nnopt search evaluates no test set)")
    ap.add_argument("--ignore-constraints", action="store_true",
                    help="run a space that has constraints, ignoring them")
    args = ap.parse_args()
    if args.budget is None and args.trials is None:
        ap.error("give --budget or --trials")
    if args.threads < 1 or args.test_limit < 1:
        ap.error("--threads and --test-limit must be at least 1")
    try:
        space = Space(args.space)
    except (OSError, SpaceError) as e:
        sys.exit(f"optuna_search.py: {e}")
    if space.objectives != [("maximize", "val_accuracy")]:
        sys.exit(f"optuna_search.py: {args.space}: objectives must be 'maximize val_accuracy' "
                 f"(one objective; got {', '.join(' '.join(o) for o in space.objectives)})")
    if space.constraints and not args.ignore_constraints:
        sys.exit(f"optuna_search.py: {args.space}: has constraints ({'; '.join(space.constraints)}), "
                 f"which nnopt train cannot check; --ignore-constraints runs it without them")
    if space.val < 1:
        sys.exit(f"optuna_search.py: {args.space}: [search] val is needed (the validation split "
                 f"the trials are scored on)")
    if not os.access(args.nnopt, os.X_OK):
        sys.exit(f"optuna_search.py: {args.nnopt} is not an executable (--nnopt PATH)")

    max_epochs = space.max_epochs()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures: our one line
    sampler = optuna.samplers.TPESampler(multivariate=True, seed=args.seed)
    if args.pruner == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=space.min_epochs,
                                                max_resource=max_epochs,
                                                reduction_factor=space.eta)
        pruner_text = (f"HyperbandPruner(min_resource={space.min_epochs}, max_resource={max_epochs}, "
                       f"reduction_factor={space.eta})")
    else:
        pruner = optuna.pruners.NopPruner()
        pruner_text = "NopPruner()"
    name = args.study_name or os.path.splitext(os.path.basename(args.space))[0]
    study = optuna.create_study(storage=args.storage, sampler=sampler, pruner=pruner,
                                study_name=name, direction="maximize", load_if_exists=True)
    first = len(study.trials)

    tmp = None
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        workdir = args.workdir
    else:
        tmp = tempfile.TemporaryDirectory(prefix="optuna_search.")
        workdir = tmp.name
    start = time.time()
    deadline = start + args.budget if args.budget else float("inf")
    runner = Runner(args, space, workdir, deadline)

    def on_signal(signum, frame):
        if runner.proc is not None:
            runner.stop(runner.proc)
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)

    def stop_on_repeated_failure(study, frozen):
        if runner.failed_in_a_row >= 3:
            log("3 trials failed in a row: stopping (see the error above)")
            study.stop()

    study.optimize(runner, n_trials=args.trials, timeout=args.budget, catch=(RuntimeError, ValueError),
                   callbacks=[stop_on_repeated_failure])
    wall = time.time() - start

    trials = study.trials[first:]
    fixed = {p.name for p in space.params if p.kind == "fixed"}
    count = {"complete": 0, "pruned": 0, "stopped": 0, "failed": 0}
    overhead, process, sampler_s, trained, stopped_s = [], [], [], 0.0, 0.0
    best = None
    State = optuna.trial.TrialState
    for t in trials:
        ua = t.user_attrs
        if t.state == State.COMPLETE:
            state = "complete"
        elif t.state == State.PRUNED:
            state = ua.get("state", "pruned")
        else:
            state = "failed"
        count[state] += 1
        if state == "stopped":
            if t.datetime_start and t.datetime_complete:
                stopped_s += (t.datetime_complete - t.datetime_start).total_seconds()
        else:
            trained += ua.get("train_seconds", 0.0)
        if state == "complete" and (best is None or t.value > best.value):
            best = t
        if state in ("complete", "pruned") and t.datetime_start and t.datetime_complete:
            trial_s = (t.datetime_complete - t.datetime_start).total_seconds()
            overhead.append(trial_s - ua["train_seconds"])
            process.append(ua["process_seconds"] - ua["train_seconds"])
            sampler_s.append(trial_s - ua["process_seconds"])
    out = {
        "tool": "optuna", "optuna_version": optuna.__version__, "space": args.space,
        "sampler": f"TPESampler(multivariate=True, seed={args.seed})", "pruner": pruner_text,
        "budget_s": args.budget, "threads": None if space.sets("train.threads") else args.threads,
        "constraints_ignored": space.constraints,
        "best_val_accuracy": round(best.value, 6) if best else None,
        "best_trial": best.number if best else None,
        "best_params": {k: v for k, v in best.user_attrs["config"].items() if k not in fixed} if best else None,
        "trials": len(trials), **count,
        "wall_seconds": round(wall, 3), "train_seconds": round(trained, 3),
        "stopped_seconds": round(stopped_s, 3),
        "untrained_per_trial_s": (round((wall - trained - stopped_s) / (len(trials) - count["stopped"]), 4)
                                  if len(trials) > count["stopped"] else None),
        "overhead_s": summary(overhead),
        "process_overhead_s": summary(process),
        "optuna_overhead_s": summary(sampler_s),
    }
    print(json.dumps(out))
    if tmp and count["failed"]:
        log(f"kept {workdir} (the failed trials' recipes and stderr)")
    elif tmp:
        tmp.cleanup()
    if trials and count["failed"] == len(trials):
        sys.exit(1)


if __name__ == "__main__":
    main()
