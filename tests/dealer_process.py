"""A managed process that answers its mailbox with pyzmq alone (as one in any language
would): connect a DEALER, say hello with the id, answer each request by its number."""

import os

import zmq

sock = zmq.Context().socket(zmq.DEALER)
sock.connect(os.environ["FORSETI_MAILBOX"])
sock.send_multipart([b"hello", os.environ["FORSETI_MAILBOX_ID"].encode()])
while True:
    kind, number, payload = sock.recv_multipart()
    sock.send_multipart([b"reply", number, b"raw " + kind + b" " + payload])
