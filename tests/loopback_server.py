"""A small HTTP server on 127.0.0.1 for the download tests (no internet on the test machines).

    with loopback_server.serve({"/a.tar.gz": blob}) as server:
      url = server.url("/a.tar.gz")
      ...
      server.requests        # [(path, Range header or None), ...] in arrival order
      server.cut_after = 100 # the next responses close the connection after 100 body bytes

It answers GET with the bytes of `files`, honours ``Range: bytes=N-`` with 206 (unless
``ranges=False``: then it always sends the whole file with 200, as some servers do), and 404s
unknown paths. Binds loopback only.
"""
import contextlib
import http.server
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
  server_version = "loopback/1"

  def log_message(self, *args):  # Quiet: pytest shows stderr of failing tests only anyway.
    pass

  def do_GET(self):
    state = self.server.state
    path = self.path.split("?", 1)[0]
    state.requests.append((self.path, self.headers.get("Range")))
    if path not in state.files:
      self.send_error(404, "not found")
      return
    body = state.files[path]
    start = 0
    header = self.headers.get("Range")
    if header and state.ranges and header.startswith("bytes="):
      start = int(header[len("bytes="):].split("-")[0])
      if start >= len(body):
        self.send_error(416, "range not satisfiable")
        return
      self.send_response(206)
      self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
    else:
      self.send_response(200)
    payload = body[start:]
    self.send_header("Content-Length", str(len(payload)))
    self.send_header("Content-Type", "application/octet-stream")
    self.end_headers()
    if state.cut_after is not None:
      # Send part of the body, then drop the connection: a cut download.
      self.wfile.write(payload[:state.cut_after])
      self.wfile.flush()
      self.close_connection = True
      return
    self.wfile.write(payload)


class _State:

  def __init__(self, files, ranges):
    self.files = dict(files)
    self.ranges = ranges
    self.cut_after = None
    self.requests = []


class Server:
  """The running server: `url(path)`, `requests`, `files`, `cut_after`, `ranges`."""

  def __init__(self, httpd, state):
    self._httpd = httpd
    self._state = state

  def url(self, path: str) -> str:
    host, port = self._httpd.server_address[:2]
    return f"http://{host}:{port}{path}"

  def __getattr__(self, name):
    return getattr(self._state, name)

  def __setattr__(self, name, value):
    if name.startswith("_"):
      object.__setattr__(self, name, value)
    else:
      setattr(self._state, name, value)


@contextlib.contextmanager
def serve(files, *, ranges: bool = True):
  """Serves `files` ({url path: bytes}) on 127.0.0.1 at a free port while the block runs."""
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  httpd.daemon_threads = True
  httpd.state = _State(files, ranges)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  try:
    yield Server(httpd, httpd.state)
  finally:
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)
