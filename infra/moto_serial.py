"""moto's server, answering one request at a time.

DynamoDB applies a conditional write atomically; moto's threaded server does not: under many
concurrent requests two `attribute_not_exists` puts of one key can both succeed (seen with 50
concurrent copies of one delivery while other suites loaded the server). The tests assert
DynamoDB's semantics, so the emulator serializes requests (connections stay concurrent).

    python3 infra/moto_serial.py HOST PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()


def serialized(environ, start_response):
    with lock:
        # The whole answer is produced under the lock (moto's bodies are small).
        return list(app(environ, start_response))


if __name__ == "__main__":
    run_simple(sys.argv[1], int(sys.argv[2]), serialized, threaded=True)
