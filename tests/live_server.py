"""A reward server on loopback in a thread (the real uvicorn server of ``rbr-fast serve``), for the
server tests, the adapter tests that score on a server, and the load benchmark."""
import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``Server(reward, token=..., port=..., max_batch=..., ...)``: the keyword arguments are ``Limits``
    fields, ``token``, ``port`` (default: a free one) and ``policy_tokenizer`` (``/get_reward``'s chat
    template); ``.url``, ``.port``, ``.stop()``."""

    def __init__(self, reward, token=None, port=None, policy_tokenizer=None, **limits):
        from rbr_fast.integrations.lazy_reward import LazyReward
        from rbr_fast.integrations.server import Limits, listen, make_server
        reward = reward if hasattr(reward, "details") else LazyReward(reward)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server(reward, "127.0.0.1", self.port, Limits(**limits), token, log_level="warning",
                                  policy_tokenizer=policy_tokenizer)
        sock = listen("127.0.0.1", self.port)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        for _ in range(400):
            if self.server.started:
                return
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)
