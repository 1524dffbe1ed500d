"""Stand-ins for the four probed services, for bench/footprint.sh and packaging/hot-functions.sh:
N HTTP servers on 127.0.0.1 that answer every GET with 200 "ok" and close; their ports are
written to PORTS_FILE, space-separated, once all listen.

Each writes its answer as the peer it stands for does, since a head and a body sent in two
writes can cost the prober a second wakeup: Docker and Ollama (Go's net/http buffers a small
answer and writes it once at the handler's end) and the Dask scheduler (tornado's finish()
writes the head and the body together) in one write; Open WebUI (uvicorn writes the head at
http.response.start and the body at http.response.body), the fourth, in two.

usage: python3 bench/standins.py N PORTS_FILE
"""
import http.server
import socketserver
import sys
import threading


class OneWrite(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    def log_message(self, *a):
        pass


class TwoWrites(OneWrite):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


n = int(sys.argv[1])
servers = [socketserver.TCPServer(("127.0.0.1", 0), TwoWrites if i == 3 else OneWrite) for i in range(n)]
with open(sys.argv[2], "w") as f:
    f.write(" ".join(str(s.server_address[1]) for s in servers))
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
