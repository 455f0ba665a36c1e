"""Grade one patch for one instance in a sandbox, the way SWE-bench does.

Apply the model patch, put back whatever test infrastructure it touched (testguard.py),
re-apply what the environment's install changed in tracked files, apply the test patch,
run the repository's test command on the files it touches (networking off), parse per-test
status with swebench's parser for the repo, and compare with FAIL_TO_PASS / PASS_TO_PASS:
resolved when every one of them passes.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, RepoError
from harness.evals.dataset import Instance
from harness.evals.envimages import EnvBuildFailed, EnvImage, EnvImages
from harness.evals.records import GradeResult, GradeStatus, TestOutcome, patch_sha
from harness.evals.repos import RepoCache
from harness.evals.specs import EnvSpec, SpecRegistry, directives_for
from harness.evals.testguard import (
    named_in_commands,
    patch_paths,
    protected,
    status_paths,
    touches_git_dir,
)
from harness.sandboxes import Limits, Sandbox, SandboxBackend, SandboxSpec
from harness.sandboxes.checkout import SAFE_GIT

START = ">>>>> Start Test Output"  # swebench.harness.constants.START_TEST_OUTPUT
END = ">>>>> End Test Output"  # swebench.harness.constants.END_TEST_OUTPUT
SCRATCH = "/tmp/.harness"
# Grading is offline: a re-run install step must reuse the build tools in the environment.
OFFLINE_PIP = "export PIP_NO_INDEX=1 PIP_NO_BUILD_ISOLATION=0"
GIT = shlex.join(SAFE_GIT)  # hooks and fsmonitor off: the work tree is the patch's
STATUS = f"{GIT} status --porcelain=v1 -z --untracked-files=all --ignored=matching"


@dataclass(frozen=True)
class GradeOptions:
    timeout_s: float = 1800.0  # swebench's default per-instance test timeout
    limits: Limits = field(default_factory=lambda: Limits(cpus=2.0, memory_mb=4096))
    output_cap: int = 16 << 20  # test logs of big suites run to megabytes
    reinstall: bool = True  # re-run the spec's install step before testing, as swebench does
    # Off by default; swebench runs tests with the network on, and a few tests need it
    # (requests' connect-timeout tests expect a tarpit address to time out, not to fail).
    network: bool = False


@dataclass(frozen=True)
class GradeOutcome:
    """A grade and the files that explain it (written under the output directory)."""

    result: GradeResult
    files: Mapping[str, str] = field(default_factory=dict)  # name -> text


def eval_script(env: EnvImage, spec: EnvSpec, directives: list[str], reinstall: bool) -> str:
    """The bash script that runs the tests and brackets their output with markers."""
    lines = ["set -uxo pipefail"]
    if env.activate:
        lines.append(env.activate)
    lines += ["cd /testbed", *spec.eval_commands]
    if reinstall and spec.install:
        lines += [OFFLINE_PIP, spec.install]
    cmds = list(spec.test_cmd)
    cmds[-1] = " ".join([cmds[-1], *(shlex.quote(d) for d in directives)])
    lines += [f": '{START}'", *cmds, f": '{END}'"]
    return "\n".join(lines) + "\n"


def extract_test_output(log: str) -> str | None:
    """What the test command printed, between the markers; None when it never ran."""
    if START not in log or END not in log:
        return None
    return log.split(START, 1)[1].split(END, 1)[0]


def evaluate(
    status_map: Mapping[str, str], inst: Instance
) -> tuple[TestOutcome, TestOutcome, bool]:
    """FAIL_TO_PASS and PASS_TO_PASS outcomes and whether the instance is resolved
    (swebench's get_eval_tests_report + get_resolution_status: resolved = FULL)."""
    from swebench.harness.constants import FAIL_ONLY_REPOS, EvalType, ResolvedStatus
    from swebench.harness.grading import get_eval_tests_report, get_resolution_status

    gold = {"FAIL_TO_PASS": list(inst.fail_to_pass), "PASS_TO_PASS": list(inst.pass_to_pass)}
    kind = EvalType.FAIL_ONLY if inst.repo in FAIL_ONLY_REPOS else EvalType.PASS_AND_FAIL
    report = get_eval_tests_report(dict(status_map), gold, eval_type=kind)
    f2p = TestOutcome(
        tuple(report["FAIL_TO_PASS"]["success"]), tuple(report["FAIL_TO_PASS"]["failure"])
    )
    p2p = TestOutcome(
        tuple(report["PASS_TO_PASS"]["success"]), tuple(report["PASS_TO_PASS"]["failure"])
    )
    return f2p, p2p, get_resolution_status(report) == ResolvedStatus.FULL.value


class Grader:
    """Grades patches; one fresh sandbox per patch, opened from the instance's env image."""

    def __init__(
        self,
        backend: SandboxBackend,
        images: EnvImages,
        specs: SpecRegistry,
        repos: RepoCache,
        options: GradeOptions | None = None,
    ) -> None:
        self.backend = backend
        self.images = images
        self.specs = specs
        self.repos = repos
        self.options = options or GradeOptions()

    async def grade(
        self,
        inst: Instance,
        patch: str,
        *,
        candidate_id: str = "final",
        model: str = "",
        run_empty: bool = False,
    ) -> GradeOutcome:
        """Grade `patch`; an empty one is `empty_patch` without a run, unless `run_empty`
        (validation: the tests on the unchanged base commit)."""
        timings: dict[str, float] = {}
        # What every result of this grade carries; the image fields join once it is known.
        fields: dict[str, Any] = {
            "candidate_id": candidate_id,
            "model": model,
            "patch_sha": patch_sha(patch),
            "timings": timings,
        }

        def done(status: GradeStatus, message: str = "", **kw: Any) -> GradeResult:
            return GradeResult(inst.instance_id, status, message=message, **fields, **kw)

        if not patch.strip() and not run_empty:
            return GradeOutcome(done("empty_patch", "the patch is empty"))
        spec = self.specs.get(inst.repo, inst.version)
        if spec is None:
            return GradeOutcome(
                done("no_spec", f"no install spec for {inst.repo} version {inst.version!r}")
            )
        fields["python_requested"] = spec.python
        start = time.monotonic()
        try:
            env = await self.images.ensure(inst, spec)
        except EnvBuildFailed as exc:
            timings["env_image"] = time.monotonic() - start
            files = {"env_build.log": _tail(exc.log_path)} if exc.log_path else {}
            return GradeOutcome(done("env_build_failed", exc.message), files)
        except RepoError as exc:
            return GradeOutcome(done("repo_failed", exc.message))
        except HarnessError as exc:
            return GradeOutcome(done("env_build_failed", exc.message))
        timings["env_image"] = time.monotonic() - start
        # Parts of env_image: building now (0 when reused); the report's stages skip them.
        timings["env_build"] = env.env_build_s
        timings["instance_build"] = env.build_s - env.env_build_s
        fields.update(
            image=env.tag, python_requested=env.python_requested, python_used=env.python_used
        )
        try:
            return await self._in_sandbox(inst, spec, env, patch, timings, done)
        except RepoError as exc:
            return GradeOutcome(done("repo_failed", exc.message))
        except HarnessError as exc:
            return GradeOutcome(done("error", str(exc)))

    async def _in_sandbox(
        self,
        inst: Instance,
        spec: EnvSpec,
        env: EnvImage,
        patch: str,
        timings: dict[str, float],
        done: Callable[..., GradeResult],
    ) -> GradeOutcome:
        opts = self.options
        start = time.monotonic()
        checkout = await self.repos.checkout(inst.repo, inst.base_commit)
        box_spec = SandboxSpec(
            repo=checkout,
            commit=inst.base_commit,
            image=env.tag,
            network=opts.network,
            limits=opts.limits,
            default_timeout=600.0,
            output_cap=opts.output_cap,
        )
        box = await self.backend.open(box_spec)
        timings["checkout"] = time.monotonic() - start
        log: list[str] = [f"# {inst.instance_id} in {env.tag} (python {env.python_used})"]
        files = {"patch.diff": patch}
        async with box:
            start = time.monotonic()
            touched: set[str] = set()
            if patch.strip():
                touched = patch_paths(patch)
                if touches_git_dir(touched):
                    log.append(">>>>> Patch Apply Failed:\nthe patch writes inside .git")
                    files["eval.log"] = "\n".join(log) + "\n"
                    return GradeOutcome(done("patch_failed", "the patch writes inside .git"), files)
                before = status_paths((await box.exec(STATUS, timeout=300)).stdout)
                applied = await box.apply_patch(patch)
                if not applied.applied:
                    timings["apply"] = time.monotonic() - start
                    log.append(f">>>>> Patch Apply Failed:\n{applied.reason}")
                    files["eval.log"] = "\n".join(log) + "\n"
                    return GradeOutcome(done("patch_failed", _first_line(applied.reason)), files)
                log.append(f">>>>> Applied Patch ({applied.method})")
                after = status_paths((await box.exec(STATUS, timeout=300)).stdout)
                touched |= {path for _, path in after - before}
            else:
                log.append(">>>>> No patch: the base commit as it is")
            log += await self._restore(box, inst, spec, touched)
            log += await self._setup_diff(box, env)
            ok, out = await self._test_patch(box, inst)
            log.append(out)
            timings["apply"] = time.monotonic() - start
            if not ok:
                files["eval.log"] = "\n".join(log) + "\n"
                return GradeOutcome(
                    done("test_patch_failed", "the test patch does not apply"), files
                )
            script = eval_script(
                env, spec, directives_for(inst.repo, inst.test_patch, spec), opts.reinstall
            )
            await box.write_file(f"{SCRATCH}/eval.sh", script)
            start = time.monotonic()
            res = await box.exec(
                ["bash", "-c", f"bash {SCRATCH}/eval.sh 2>&1"], timeout=opts.timeout_s
            )
            timings["tests"] = time.monotonic() - start
        log += [f"$ bash eval.sh  # exit {res.exit_code}", res.output]
        files["eval.log"] = "\n".join(log) + "\n"
        if res.timed_out:
            return GradeOutcome(done("timeout", f"tests ran past {opts.timeout_s:g} s"), files)
        section = extract_test_output(res.output)
        if section is None:
            return GradeOutcome(done("error", "the test command did not run (see eval.log)"), files)
        parse = self.specs.parser(inst.repo, spec)
        status_map = parse(section) or parse(res.output)  # swebench's fallback
        f2p, p2p, resolved = evaluate(status_map, inst)
        files["report.json"] = json.dumps({"tests_status": status_map}, indent=1, sort_keys=True)
        n_fail = len(f2p.failure) + len(p2p.failure)
        message = "" if resolved else f"{n_fail} required test(s) failed or did not run"
        status: GradeStatus = "resolved" if resolved else "unresolved"
        return GradeOutcome(done(status, message, fail_to_pass=f2p, pass_to_pass=p2p), files)

    async def _setup_diff(self, box: Sandbox, env: EnvImage) -> list[str]:
        if not env.setup_diff:
            return []
        q = shlex.quote(env.setup_diff)
        res = await box.exec(
            f"if [ -s {q} ]; then {GIT} apply --whitespace=nowarn {q}"
            " && echo applied; else echo none; fi",
            timeout=120,
        )
        if res.ok and res.stdout.strip() == "none":
            return []
        state = "applied" if res.ok else f"did not apply:\n{res.output.strip()}"
        return [f">>>>> Install-time changes to tracked files {state}"]

    async def _restore(
        self, box: Sandbox, inst: Instance, spec: EnvSpec, touched: set[str]
    ) -> list[str]:
        """Put the test infrastructure the patch touched, and every file of the test patch,
        back to the base commit (removed when the base commit lacks it), parents first."""
        named = named_in_commands([*spec.test_cmd, *spec.eval_commands])
        mine = sorted(p for p in touched if protected(p, named))
        paths = sorted({*mine, *patch_paths(inst.test_patch)}, key=lambda p: (p.count("/"), p))
        if not paths:
            return []
        base = shlex.quote(inst.base_commit)
        lines = ["set -u"]
        for path in paths:
            q = shlex.quote(path)
            lines.append(
                f"rm -rf -- {q}; if {GIT} cat-file -e {base}:{q} 2>/dev/null;"
                f" then {GIT} checkout -q {base} -- {q} || echo 'cannot restore '{q}; fi"
            )
        await box.write_file(f"{SCRATCH}/restore.sh", "\n".join(lines) + "\n")
        res = await box.exec(f"bash {SCRATCH}/restore.sh", timeout=300)
        out = []
        if mine:
            out.append(
                ">>>>> Test infrastructure the patch touched, back to the base commit: "
                + ", ".join(mine)
            )
        if not res.ok or res.output.strip():
            out.append(f">>>>> Restoring test files: {res.output.strip()}")
        return out

    async def _test_patch(self, box: Sandbox, inst: Instance) -> tuple[bool, str]:
        """`git apply` the test patch (its files are already as in the base commit)."""
        if not inst.test_patch.strip():
            return True, ">>>>> No test patch"
        path = f"{SCRATCH}/test.patch"
        await box.write_file(
            path, inst.test_patch if inst.test_patch.endswith("\n") else inst.test_patch + "\n"
        )
        res = await box.exec(f"{GIT} apply -v {path}", timeout=120)
        head = ">>>>> Applied Test Patch" if res.ok else ">>>>> Test Patch Apply Failed"
        return res.ok, f"{head}\n{res.output.strip()}"


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")[:300]


def _tail(path: str, lines: int = 400) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(build log {path} is not readable here)\n"
    kept = text.splitlines()[-lines:]
    return f"# last {len(kept)} lines of {path}\n" + "\n".join(kept) + "\n"
