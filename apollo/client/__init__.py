"""The native direct-path client (``AsyncClient``, ``Client``) and the engine the S3 gateway shares with it."""

from apollo.client.batch import BatchItem, BatchResult, Pinned
from apollo.client.blocking import Client, from_environment
from apollo.client.native import AsyncClient, ObjectInfo
from apollo.client.tls import CertError
from apollo.client.transaction import StagedObject, SyncTransaction, Transaction
from apollo.proto.records import Snapshot, TxnInfo

__all__ = ["AsyncClient", "BatchItem", "BatchResult", "CertError", "Client", "ObjectInfo", "Pinned", "Snapshot",
           "StagedObject", "SyncTransaction", "Transaction", "TxnInfo", "from_environment"]
