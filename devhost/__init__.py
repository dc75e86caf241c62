"""devhost: a local stand-in for the Azure Functions host, for development and tests only.

``python -m devhost [--port 7071] [--host 127.0.0.1] [--app function_app:app] [--root DIR]
[--no-timers] [--queue-lease-seconds 60] [--max-body-bytes 1048576] [--grace-seconds 3]``

It imports the FunctionApp from ``--root`` (which becomes the working directory, as the host's
is the app folder), indexes it with azure.functions' own ``get_functions()``, reads host.json,
and copies ``Values`` from local.settings.json into the environment where not already set (as
Core Tools does). Then it serves:

- HTTP triggers under ``extensions.http.routePrefix`` with ASP.NET route templates (routes.py,
  http.py); async functions run on one shared event loop (invoker.py).
- Timer triggers on 6-field NCRONTAB schedules in UTC, ``%SETTING%`` schedules resolved from
  the environment, ``runOnStartup`` honoured (timers.py). ``--no-timers`` turns schedules off so
  several devhosts can share one storage account with one of them running the timers.
- Queue triggers polling Queue Storage with ``extensions.queues`` semantics: batches, back-off,
  visibility timeout, ``maxDequeueCount`` and ``<queue>-poison`` (queues.py, leases.py).
- Queue output bindings, sent in ``messageEncoding`` once the function returned (bindings.py).
- The admin API: ``GET /admin/functions``, ``POST /admin/functions/{name}`` (admin.py).

Deliberate differences from the real host:

- ``POST /admin/functions/{name}`` answers after the function ran (202, or 500 if it raised),
  not as soon as it is queued, so callers can wait on it. No keys: auth levels are not enforced
  (as with Core Tools); devhost listens on loopback by default.
- Timers are not singletons across instances (the host takes a blob lease); use ``--no-timers``
  on all but one devhost. Schedule status is not persisted, so missed occurrences while devhost
  was down are not run as past due.
- A message that is not valid in ``messageEncoding`` goes to the poison queue at once rather than
  after ``maxDequeueCount`` failed bindings.
- Queue messages are held invisible for ``--queue-lease-seconds`` (renewed every half) and given
  back at shutdown; the host uses a fixed 10-minute lease.
- ``functionTimeout`` is not enforced; request bodies are limited by ``--max-body-bytes``
  (1 MiB by default, where the host allows 100 MB).
- Only http, timer and queue triggers, and queue output bindings, are served; a function with
  another trigger is skipped with a warning, another binding stops start-up.
"""
