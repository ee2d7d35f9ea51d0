"""Issue 22: paho-mqtt over TLS with a client certificate (mTLS). Run as
`python3 tls.py HOST TLS_PORT WSS_PORT CA_FILE CERT_FILE KEY_FILE`: an MQTT 5 subscriber over
MQTT-over-TLS and an MQTT 3.1.1 publisher over WebSocket-over-TLS (path /mqtt), each trusting
only CA_FILE and presenting CERT_FILE, exchange QoS 0, 1 and 2 messages. The broker refuses
anonymous clients, so their certificates (use_identity_as_username) are what let them in."""

import sys

import paho.mqtt.client as mqtt

from common import Client, fail


def tls_client(client_id, protocol, ca, cert, key, transport="tcp"):
    client = Client(client_id, protocol, transport=transport)
    # Verifies the broker's certificate against CA_FILE and the host name (an IP SAN here).
    client.client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    return client


def main():
    if len(sys.argv) != 7:
        fail(f"usage: {sys.argv[0]} HOST TLS_PORT WSS_PORT CA_FILE CERT_FILE KEY_FILE")
    host, tls_port, wss_port, ca, cert, key = sys.argv[1:]
    subscriber = tls_client("paho-tls-sub", mqtt.MQTTv5, ca, cert, key)
    subscriber.connect(host, int(tls_port))
    subscriber.subscribe("paho/tls/#", qos=2)

    publisher = tls_client("paho-wss-pub", mqtt.MQTTv311, ca, cert, key, transport="websockets")
    publisher.connect(host, int(wss_port))
    expected = {}
    for qos in (0, 1, 2):
        payload = f"over tls at qos {qos}".encode()
        publisher.publish(f"paho/tls/qos{qos}", payload, qos)
        expected[f"paho/tls/qos{qos}"] = (payload, qos)

    received = {}
    for _ in range(len(expected)):
        message = subscriber.next_message()
        received[message.topic] = (message.payload, message.qos)
    if received != expected:
        fail(f"got {received}, expected {expected}")
    publisher.close()
    subscriber.close()
    print("ok")


if __name__ == "__main__":
    main()
