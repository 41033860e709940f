"""The web console: server-rendered pages under ``/_apollo/console/`` (docs/operations.md, "Console").

A front door like the S3 gateway: it imports ``apollo.client`` and ``apollo.proto`` only; its host
(``apollo.roles.server``) hands it the object engine and the status source.
"""

from apollo.console.app import add_console_routes

__all__ = ["add_console_routes"]
