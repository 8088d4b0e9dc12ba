"""Read objects from ``s3://`` URLs with boto3, on AWS or any S3-compatible endpoint.

Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, instance and container roles); this module never reads,
stores or prints them. Errors name the URL and boto3's error code only.

Follows the Amazon S3 API (GetObject, HeadObject, ListObjectsV2) as exposed by boto3's ``s3`` client. A custom
``endpoint_url`` (MinIO, a local test server) is addressed path-style, which every S3-compatible
server supports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

S3_SCHEME = "s3://"
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3AccessError(OSError):
    """S3 could not be read (credentials, permissions, network); the message names the URL."""


@dataclass(frozen=True)
class ObjectInfo:
    """What HeadObject says about an object: enough to tell one version of it from the next."""

    url: str
    etag: str
    last_modified: datetime
    size: int


def is_s3_url(path: str) -> bool:
    return path.startswith(S3_SCHEME)


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")``. Raises ValueError when there is no bucket."""
    if not is_s3_url(url):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url.removeprefix(S3_SCHEME).partition("/")
    if not bucket:
        raise ValueError(f"s3 URL has no bucket: {url!r}")
    return bucket, key


def join_s3_url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])


@dataclass
class S3Reader:
    """Reads objects by URL. One boto3 client per reader; clients are thread-safe."""

    endpoint_url: str | None = None
    region: str | None = None
    _client: Any = field(default=None, init=False, repr=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            config = Config(s3={"addressing_style": "path"}) if self.endpoint_url else None
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config)
        return self._client

    def read_bytes(self, url: str) -> bytes:
        """The object's content. Raises FileNotFoundError when it does not exist."""
        bucket, key = split_s3_url(url)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise _translate(exc, url) from None
        except BotoCoreError as exc:
            raise S3AccessError(f"{url}: {type(exc).__name__}: {exc}") from None

    def download(self, url: str, target: IO[bytes]) -> None:
        """Stream the object into an open binary file (bounded memory). FileNotFoundError when absent."""
        bucket, key = split_s3_url(url)
        try:
            self.client.download_fileobj(bucket, key, target)
        except ClientError as exc:
            raise _translate(exc, url) from None
        except BotoCoreError as exc:
            raise S3AccessError(f"{url}: {type(exc).__name__}: {exc}") from None

    def stat(self, url: str) -> ObjectInfo:
        """ETag, LastModified and size of an object. FileNotFoundError when absent."""
        bucket, key = split_s3_url(url)
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            raise _translate(exc, url) from None
        except BotoCoreError as exc:
            raise S3AccessError(f"{url}: {type(exc).__name__}: {exc}") from None
        return ObjectInfo(url, str(head.get("ETag", "")).strip('"'), head["LastModified"], int(head["ContentLength"]))

    def exists(self, url: str) -> bool:
        bucket, key = split_s3_url(url)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            error = _translate(exc, url)
            if isinstance(error, FileNotFoundError):
                return False
            raise error from None
        except BotoCoreError as exc:
            raise S3AccessError(f"{url}: {type(exc).__name__}: {exc}") from None
        return True

    def list_urls(self, prefix_url: str) -> list[str]:
        """Every object URL under a prefix, sorted."""
        bucket, prefix = split_s3_url(prefix_url)
        urls: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                urls.extend(f"{S3_SCHEME}{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
        except ClientError as exc:
            raise _translate(exc, prefix_url) from None
        except BotoCoreError as exc:
            raise S3AccessError(f"{prefix_url}: {type(exc).__name__}: {exc}") from None
        return sorted(urls)


def _translate(exc: ClientError, url: str) -> OSError:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in _MISSING_CODES:
        return FileNotFoundError(url)
    if code == "NoSuchBucket":
        return S3AccessError(f"{url}: bucket does not exist (NoSuchBucket)")
    return S3AccessError(f"{url}: S3 refused the request ({code or 'unknown error'})")
