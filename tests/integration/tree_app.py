"""A WSGI app for test_tree.py: each request burns a little CPU in the gunicorn worker."""


def app(environ, start_response):
    x = 0
    for i in range(20000):
        x += i * i
    body = b"ok %d\n" % x
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
