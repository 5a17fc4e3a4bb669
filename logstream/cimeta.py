"""Who ran a job: the host name and the CI system's standard variables, as a flat ``meta`` dict.

Pure: it reads only the mapping it is given. Keys (all optional but ``host``): ``ci`` (``github``,
``gitlab``, ``buildkite``, ``jenkins``), ``repository``, ``branch``, ``commit``, ``ci_job`` (the
CI system's name for the step or job), ``run_url`` (the CI run's page), ``repository_url``,
``commit_url``. Values are cut to the length the server accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from logstream.ingest import MAX_META_VALUE_CHARS

Env = Mapping[str, str]


def ci_meta(environ: Env, host: str) -> dict[str, str]:
    """The ``meta`` a runner sends: ``host``, plus the first CI system found in ``environ``."""
    meta = {"host": host}
    for detect in _DETECTORS:
        found = detect(environ)
        if found:
            meta.update(found)
            break
    return {
        key: value[:MAX_META_VALUE_CHARS]
        for key, value in meta.items()
        if value and (not key.endswith("_url") or value.startswith(("https://", "http://")))
    }


def _github(env: Env) -> dict[str, str] | None:
    if env.get("GITHUB_ACTIONS") != "true":
        return None
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repository = env.get("GITHUB_REPOSITORY", "")
    run_id = env.get("GITHUB_RUN_ID", "")
    sha = env.get("GITHUB_SHA", "")
    meta = {
        "ci": "github",
        "repository": repository,
        "branch": env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME", ""),
        "commit": sha,
        "ci_job": " / ".join(p for p in (env.get("GITHUB_WORKFLOW"), env.get("GITHUB_JOB")) if p),
    }
    if repository:
        meta["repository_url"] = f"{server}/{repository}"
        if run_id:
            meta["run_url"] = f"{server}/{repository}/actions/runs/{run_id}"
            attempt = env.get("GITHUB_RUN_ATTEMPT", "")
            if attempt and attempt != "1":
                meta["run_url"] += f"/attempts/{attempt}"
        if sha:
            meta["commit_url"] = f"{server}/{repository}/commit/{sha}"
    return meta


def _gitlab(env: Env) -> dict[str, str] | None:
    if env.get("GITLAB_CI") != "true":
        return None
    project_url = env.get("CI_PROJECT_URL", "").rstrip("/")
    sha = env.get("CI_COMMIT_SHA", "")
    meta = {
        "ci": "gitlab",
        "repository": env.get("CI_PROJECT_PATH", ""),
        "branch": env.get("CI_COMMIT_REF_NAME", ""),
        "commit": sha,
        "ci_job": env.get("CI_JOB_NAME", ""),
        "run_url": env.get("CI_JOB_URL") or env.get("CI_PIPELINE_URL", ""),
        "repository_url": project_url,
    }
    if project_url and sha:
        meta["commit_url"] = f"{project_url}/-/commit/{sha}"
    return meta


def _buildkite(env: Env) -> dict[str, str] | None:
    if env.get("BUILDKITE") != "true":
        return None
    build_url = env.get("BUILDKITE_BUILD_URL", "")
    job_id = env.get("BUILDKITE_JOB_ID", "")
    return {
        "ci": "buildkite",
        "repository": env.get("BUILDKITE_REPO", "") or env.get("BUILDKITE_PIPELINE_SLUG", ""),
        "branch": env.get("BUILDKITE_BRANCH", ""),
        "commit": env.get("BUILDKITE_COMMIT", ""),
        "ci_job": env.get("BUILDKITE_LABEL", ""),
        "run_url": f"{build_url}#{job_id}" if build_url and job_id else build_url,
    }


def _jenkins(env: Env) -> dict[str, str] | None:
    if not env.get("JENKINS_URL") and not env.get("JENKINS_HOME"):
        return None
    branch = env.get("BRANCH_NAME") or env.get("GIT_BRANCH", "")
    return {
        "ci": "jenkins",
        "repository": env.get("GIT_URL", ""),
        "branch": branch.removeprefix("origin/"),
        "commit": env.get("GIT_COMMIT", ""),
        "ci_job": env.get("JOB_NAME", ""),
        "run_url": env.get("BUILD_URL", ""),
    }


_DETECTORS: tuple[Callable[[Env], dict[str, str] | None], ...] = (
    _github,
    _gitlab,
    _buildkite,
    _jenkins,
)
