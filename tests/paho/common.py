"""Helpers shared by the paho-mqtt scenarios: connect, wait with a deadline, fail loudly.

Each scenario is run as `python3 tests/paho/<scenario>.py <host> <port>` by tests/mqtt_paho.rs
and exits 0 only when every check passed.
"""

import queue
import sys
import threading

import paho.mqtt.client as mqtt

DEADLINE = 30.0


def fail(why):
    print(f"FAIL: {why}", file=sys.stderr)
    sys.exit(1)


def host_port():
    if len(sys.argv) != 3:
        fail(f"usage: {sys.argv[0]} HOST PORT")
    return sys.argv[1], int(sys.argv[2])


class Client:
    """A paho client whose CONNACK, SUBACK, PUBLISH-complete and incoming messages are waitable."""

    def __init__(self, client_id, protocol, transport="tcp"):
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            transport=transport,
        )
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        self.connected = threading.Event()
        self.connect_reason = None
        self.connack_properties = None
        self.subacks = queue.Queue()
        self.messages = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_reason = reason_code
        self.connack_properties = properties
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.subacks.put((mid, reason_codes))

    def _on_message(self, client, userdata, message):
        self.messages.put(message)

    def connect(self, host, port, **kwargs):
        self.client.connect(host, port, keepalive=30, **kwargs)
        self.client.loop_start()
        if not self.connected.wait(DEADLINE):
            fail("no CONNACK")
        if self.connect_reason.is_failure:
            fail(f"CONNACK refused: {self.connect_reason}")

    def subscribe(self, *args, **kwargs):
        result, mid = self.client.subscribe(*args, **kwargs)
        if result != mqtt.MQTT_ERR_SUCCESS:
            fail(f"subscribe: {result}")
        try:
            got_mid, reason_codes = self.subacks.get(timeout=DEADLINE)
        except queue.Empty:
            fail("no SUBACK")
        if got_mid != mid:
            fail(f"SUBACK for {got_mid}, expected {mid}")
        for code in reason_codes:
            if code.is_failure:
                fail(f"subscription refused: {code}")
        return reason_codes

    def publish(self, topic, payload, qos, **kwargs):
        info = self.client.publish(topic, payload, qos=qos, **kwargs)
        # wait_for_publish returns once PUBACK (QoS 1) or PUBCOMP (QoS 2) came back.
        info.wait_for_publish(timeout=DEADLINE)
        if not info.is_published():
            fail(f"publish to {topic} at QoS {qos} was not acknowledged")

    def next_message(self):
        try:
            return self.messages.get(timeout=DEADLINE)
        except queue.Empty:
            fail("no message arrived")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
