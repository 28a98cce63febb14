"""Where the files are: endpoints, the hub's file lists with checksums, the cloud links.

The hub is asked once per repository (``HfApi.model_info`` with file metadata) for the
commit, each file's size and, for LFS files, its SHA-256; small files carry their git
blob id instead. Download URLs are pinned to that commit so every file of a run comes from
the same revision. The token comes from huggingface_hub's usual places (``HF_TOKEN``, the
saved login) and is only ever put in request headers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from cogvideo_cli.core.errors import DownloadError
from cogvideo_cli.hub.manifest import (DEFAULT_CLOUD_URL, CloudPart, HubPart, Part, TextPart)

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
PT_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save: zip container, or a legacy pickle
MIRROR_FIX = ("check the network or proxy; where huggingface.co is blocked, point "
              "HF_ENDPOINT (or --endpoint) at a reachable mirror, e.g. "
              "export HF_ENDPOINT=https://hf-mirror.com")


@dataclass(frozen=True)
class Endpoints:
    """The hub and cloud base URLs of a run and where each came from."""

    hub: str
    hub_from: str  # "--endpoint", "HF_ENDPOINT" or "default"
    cloud: str
    cloud_from: str  # "--cloud-url", "COGVX_CLOUD_URL" or "default"
    token_from: str | None  # "HF_TOKEN", "saved login" or None; never the token itself

    @property
    def mirror(self) -> bool:
        """True when the hub is anything but huggingface.co."""
        return self.hub.rstrip("/") != DEFAULT_ENDPOINT


def resolve_endpoints(endpoint: str | None = None, cloud_url: str | None = None,
                      environ: Mapping[str, str] | None = None) -> Endpoints:
    """Pick the hub endpoint (option, then ``HF_ENDPOINT``) and the cloud base URL."""
    env = os.environ if environ is None else environ
    if endpoint:
        hub, hub_from = endpoint, "--endpoint"
    elif env.get("HF_ENDPOINT"):
        hub, hub_from = env["HF_ENDPOINT"], "HF_ENDPOINT"
    else:
        hub, hub_from = DEFAULT_ENDPOINT, "default"
    if cloud_url:
        cloud, cloud_from = cloud_url, "--cloud-url"
    elif env.get("COGVX_CLOUD_URL"):
        cloud, cloud_from = env["COGVX_CLOUD_URL"], "COGVX_CLOUD_URL"
    else:
        cloud, cloud_from = DEFAULT_CLOUD_URL, "default"
    # a hub mirror is no copy of the cloud shares, so each URL gets its own example
    for label, url, origin, other in (
            ("hub endpoint", hub, hub_from, "a hub mirror such as https://hf-mirror.com"),
            ("cloud URL", cloud, cloud_from,
             f"leave it unset for the shares themselves ({DEFAULT_CLOUD_URL})")):
        if not url.startswith(("http://", "https://")):
            from cogvideo_cli.core.errors import UsageError

            raise UsageError(f"the {label} {url!r} (from {origin}) is not an http(s) URL",
                             value=url, fix=f"write the scheme, e.g. http://{url}, or {other}")
    return Endpoints(hub=hub.rstrip("/"), hub_from=hub_from, cloud=cloud.rstrip("/"),
                     cloud_from=cloud_from, token_from=_token_source(env))


def _token_source(env: Mapping[str, str]) -> str | None:
    if env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN"):
        return "HF_TOKEN"
    try:
        from huggingface_hub import get_token

        return "saved login" if get_token() else None
    except Exception:  # a broken token file must not stop a public download
        return None


@dataclass
class RemoteFile:
    """One file of the weights folder: where it comes from and what it must be."""

    dest: str  # relative to the weights folder, with forward slashes
    component: str
    kind: str  # "hub", "cloud-file", "cloud-zip" or "text"
    url: str = ""
    size: int | None = None
    sha256: str | None = None
    git_sha1: str | None = None
    source: str = ""  # for people and the record: repo@commit:path or the link
    member: str | None = None  # for "cloud-zip": the entry to take
    text: str | None = None  # for "text"
    magic: tuple[bytes, ...] = field(default_factory=tuple)
    probed: int | None = None  # a cloud link's size, learned by a HEAD request

    @property
    def expected_size(self) -> int | None:
        """The size known beforehand: the hub's, or what a cloud link announced."""
        return self.size if self.size is not None else self.probed

    @property
    def check(self) -> str:
        """How the file is verified: sha256, git-sha1, size or format."""
        if self.sha256:
            return "sha256"
        if self.git_sha1:
            return "git-sha1"
        if self.kind == "text":
            return "content"
        return "size" if self.size is not None else "format"


def keep_side_requests_off(endpoint: str) -> None:
    """Stop huggingface_hub's own side request when the user chose another endpoint.

    huggingface_hub reads ``HF_ENDPOINT`` once, at import, and builds its user agent from
    a registry it fetches from that address. With ``--endpoint`` (or an ``HF_ENDPOINT`` set
    after the import) that request would still go to huggingface.co, which a user behind a
    mirror cannot reach and did not ask for; its telemetry switch turns it off.
    """
    from huggingface_hub import constants

    if constants.ENDPOINT.rstrip("/") != endpoint:
        constants.HF_HUB_DISABLE_TELEMETRY = True


def resolve_url(endpoint: str, repo: str, commit: str, path: str) -> str:
    """The hub's download URL of a file at a commit (what ``hf_hub_url`` builds).

    Built here because ``hf_hub_url`` only swaps in an endpoint that differs from the one
    huggingface_hub read at import time.
    """
    return f"{endpoint}/{repo}/resolve/{quote(commit, safe='')}/{quote(path)}"


class HubLister:
    """Lists the files of hub repositories once each, mapping errors to cogvx errors."""

    def __init__(self, endpoints: Endpoints, revision: str = "main") -> None:
        self.endpoints = endpoints
        self.revision = revision
        self.commits: dict[str, str] = {}
        self._siblings: dict[str, list] = {}

    def files(self, part: HubPart) -> list[RemoteFile]:
        """The files of ``part``, with the hub's sizes and checksums."""
        from huggingface_hub.utils import filter_repo_objects

        siblings = self._list(part.repo)
        chosen = filter_repo_objects(siblings, allow_patterns=list(part.allow) or None,
                                     ignore_patterns=list(part.ignore) or None,
                                     key=lambda s: s.rfilename)
        commit = self.commits[part.repo]
        out = []
        for sib in chosen:
            lfs = sib.lfs
            out.append(RemoteFile(
                dest=part.local_name(sib.rfilename), component=part.component, kind="hub",
                url=resolve_url(self.endpoints.hub, part.repo, commit, sib.rfilename),
                size=lfs.size if lfs else sib.size,
                sha256=lfs.sha256 if lfs else None,
                git_sha1=None if lfs else sib.blob_id,
                source=f"{part.repo}@{commit[:12]}:{sib.rfilename}"))
        if not out:
            raise DownloadError(
                f"{part.repo} at {self.endpoints.hub} has no files matching "
                f"{', '.join(part.allow or ('*',))}",
                fix="the repository changed, or the mirror holds an incomplete copy; "
                    "try another HF_ENDPOINT")
        return out

    def _list(self, repo: str) -> list:
        if repo not in self._siblings:
            info = self._model_info(repo)
            self.commits[repo] = info.sha or self.revision
            self._siblings[repo] = list(info.siblings or [])
        return self._siblings[repo]

    def _model_info(self, repo: str):
        from huggingface_hub import HfApi

        from cogvideo_cli.hub.transfer import CONNECT_TIMEOUT

        keep_side_requests_off(self.endpoints.hub)
        api = HfApi(endpoint=self.endpoints.hub)
        try:
            return api.model_info(repo, revision=self.revision, files_metadata=True,
                                  timeout=CONNECT_TIMEOUT)
        except Exception as exc:  # mapped below; anything unknown is re-raised
            raise self._hub_error(repo, exc) from exc

    def _hub_error(self, repo: str, exc: Exception) -> Exception:
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError,
                                            OfflineModeIsEnabled, RepositoryNotFoundError)

        from cogvideo_cli.hub.transfer import httpx_module

        where = f"{self.endpoints.hub} (from {self.endpoints.hub_from})"
        if isinstance(exc, OfflineModeIsEnabled):
            return DownloadError("HF_HUB_OFFLINE is set, so the hub cannot be asked",
                                 fix="unset HF_HUB_OFFLINE, or use --verify-only to check "
                                     "a folder without the network")
        if isinstance(exc, httpx_module().TransportError):
            return DownloadError(f"could not reach the Hugging Face hub at {where}: "
                                 f"{str(exc) or type(exc).__name__}", fix=MIRROR_FIX)
        if isinstance(exc, GatedRepoError) or (
                isinstance(exc, HfHubHTTPError) and _status(exc) in (401, 403)):
            return DownloadError(f"the hub refused access to {repo} at {where}",
                                 fix="log in with `hf auth login` or set HF_TOKEN, and accept "
                                     "the model's terms on its page")
        if isinstance(exc, RepositoryNotFoundError):
            return DownloadError(f"{repo} was not found at {where}",
                                 fix="check HF_ENDPOINT; a mirror may not hold this model")
        if isinstance(exc, HfHubHTTPError):
            return DownloadError(f"the hub at {where} answered HTTP {_status(exc)} for {repo}",
                                 fix="retry later, or " + MIRROR_FIX.split("; ", 1)[1])
        if isinstance(exc, ValueError):  # not JSON: something else answers at that address
            return DownloadError(f"{where} does not answer like a Hugging Face hub",
                                 fix="point HF_ENDPOINT at a hub or a hub mirror")
        return exc


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def cloud_files(part: CloudPart, endpoints: Endpoints) -> list[RemoteFile]:
    """The files a cloud share gives; their sizes are learned when they are fetched."""
    url = endpoints.cloud + part.share
    if part.kind == "zip":
        return [RemoteFile(dest=dest, component=part.component, kind="cloud-zip", url=url,
                           member=member, magic=PT_MAGIC, source=f"{url} ({member})")
                for member, dest in part.members.items()]
    return [RemoteFile(dest=part.dest, component=part.component, kind="cloud-file", url=url,
                       magic=PT_MAGIC, source=url)]


def text_file(part: TextPart) -> RemoteFile:
    """A file cogvx writes itself."""
    return RemoteFile(dest=part.dest, component=part.component, kind="text",
                      size=len(part.text.encode()), text=part.text, source="written by cogvx")


def remote_files(parts: list[Part], endpoints: Endpoints,
                 lister: HubLister) -> list[RemoteFile]:
    """Every file of a plan, in order, without duplicates."""
    files: list[RemoteFile] = []
    for part in parts:
        if isinstance(part, HubPart):
            files.extend(lister.files(part))
        elif isinstance(part, CloudPart):
            files.extend(cloud_files(part, endpoints))
        else:
            files.append(text_file(part))
    seen: dict[str, RemoteFile] = {}
    for item in files:
        seen.setdefault(item.dest, item)
    return list(seen.values())


def probe_size(client, url: str) -> int | None:
    """The size a cloud link announces (HEAD, redirects followed), or None if unknown."""
    try:
        response = client.head(url, headers={"Accept-Encoding": "identity"})
    except Exception as exc:  # a probe only improves the plan; the fetch reports errors
        log.info("could not probe %s: %s", url, exc)
        return None
    length = response.headers.get("content-length", "")
    content_type = response.headers.get("content-type", "")
    if response.status_code != 200 or not length.isdigit() or "html" in content_type:
        return None
    return int(length)
