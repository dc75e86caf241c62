"""Entity-group transactions (up to 100 inserts into one partition), for seeding only.

``SdkWriter`` uses ``TableClient.submit_transaction``, which builds and parses its MIME parts
with the ``email`` package: about 0.46 ms of client CPU per row here, against about 0.12 ms of
Azurite's, so the client is the bottleneck (100,000 connections, 200,000 rows: 142 s on two
cores with four threads). ``BatchWriter`` sends the same request (the body and SharedKey
signature the SDK sends; the Table service's "Performing entity group transactions") from a
string template: the same seeding takes about 23 s. The bench reads rows back through ``Store``
either way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

import requests
from azure.data.tables import EdmType, EntityProperty, TableClient

_VERSION = "2019-02-02"
_OK_PART = b"HTTP/1.1 204"  # each insert's answer, with Prefer: return-no-content


def odata(entity: dict[str, Any]) -> dict[str, Any]:
    """An entity as the Table service's JSON, with the type annotations the SDK adds."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        if isinstance(value, EntityProperty):
            if value.edm_type != EdmType.INT64:
                raise TypeError(f"{name}: only Int64 EntityProperty values are supported")
            out[name], out[f"{name}@odata.type"] = str(value.value), "Edm.Int64"
        elif isinstance(value, datetime):
            stamp = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            out[name], out[f"{name}@odata.type"] = stamp, "Edm.DateTime"
        elif isinstance(value, str | bool | int):
            out[name] = value  # an int here fits Int32 (to_properties wraps larger ones)
        else:
            raise TypeError(f"{name}: {type(value).__name__} values are not supported")
    return out


class BatchWriter:
    """Inserts rows of one partition in one transaction; one HTTP session per thread."""

    def __init__(self, endpoint: str, account: str, key: str) -> None:
        self._endpoint = endpoint.rstrip("/")  # http://host:port/account
        self._account = account
        self._key = base64.b64decode(key)
        self._local = threading.local()

    def insert(self, table: str, rows: list[dict[str, Any]]) -> int:
        if not 0 < len(rows) <= 100:
            raise ValueError("a transaction holds 1 to 100 rows")
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        body = self._body(table, rows, batch, changeset)
        content_type = f"multipart/mixed; boundary={batch}"
        date = formatdate(usegmt=True)
        path = f"/{self._endpoint.split('/', 3)[3]}/$batch"
        signed = f"POST\n\n{content_type}\n{date}\n/{self._account}{path}"
        signature = base64.b64encode(
            hmac.new(self._key, signed.encode(), hashlib.sha256).digest()
        ).decode()
        headers = {
            "Content-Type": content_type,
            "x-ms-date": date,
            "x-ms-version": _VERSION,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Accept": "application/json",
            "Authorization": f"SharedKey {self._account}:{signature}",
        }
        response = self._session().post(
            f"{self._endpoint}/$batch", data=body, headers=headers, timeout=60
        )
        if response.status_code != 202 or response.content.count(_OK_PART) != len(rows):
            raise RuntimeError(
                f"batch into {table} failed: {response.status_code} {response.text[:500]}"
            )
        return len(rows)

    def _body(self, table: str, rows: list[dict[str, Any]], batch: str, changeset: str) -> bytes:
        parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
        for number, row in enumerate(rows):
            payload = json.dumps(odata(row))
            parts.append(
                f"--{changeset}\r\nContent-Type: application/http\r\n"
                f"Content-Transfer-Encoding: binary\r\nContent-ID: {number}\r\n\r\n"
                f"POST {self._endpoint}/{table} HTTP/1.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload.encode())}\r\nx-ms-version: {_VERSION}\r\n"
                f"DataServiceVersion: 3.0\r\nAccept: application/json;odata=minimalmetadata\r\n"
                f"Prefer: return-no-content\r\n\r\n{payload}\r\n"
            )
        parts.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n")
        return "".join(parts).encode()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            self._local.session = session
        return session


class SdkWriter:
    """The same inserts through ``TableClient.submit_transaction``; clients per thread."""

    def __init__(self, connection_string: str) -> None:
        self._connection_string = connection_string
        self._local = threading.local()

    def insert(self, table: str, rows: list[dict[str, Any]]) -> int:
        clients: dict[str, TableClient] = self._local.__dict__.setdefault("clients", {})
        if table not in clients:
            clients[table] = TableClient.from_connection_string(self._connection_string, table)
        clients[table].submit_transaction([("create", row) for row in rows])
        return len(rows)
