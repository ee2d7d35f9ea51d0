"""MQTT over WebSocket (path /mqtt): paho-mqtt with transport="websockets", MQTT 3.1.1 and 5,
QoS 0, 1 and 2 and a payload larger than one frame of paho's."""

import paho.mqtt.client as mqtt

from common import Client, fail, host_port


def main():
    host, port = host_port()
    subscriber = Client("paho-ws-sub", mqtt.MQTTv5, transport="websockets")
    subscriber.connect(host, port)
    subscriber.subscribe("paho/ws/#", qos=2)

    publisher = Client("paho-ws-pub", mqtt.MQTTv311, transport="websockets")
    publisher.connect(host, port)
    big = bytes(range(256)) * 1024  # 256 KiB
    expected = {}
    for qos in (0, 1, 2):
        payload = f"over websocket at qos {qos}".encode()
        publisher.publish(f"paho/ws/qos{qos}", payload, qos)
        expected[f"paho/ws/qos{qos}"] = (payload, qos)
    publisher.publish("paho/ws/big", big, 1)
    expected["paho/ws/big"] = (big, 1)

    received = {}
    for _ in range(len(expected)):
        message = subscriber.next_message()
        received[message.topic] = (message.payload, message.qos)
    for topic, want in expected.items():
        got = received.get(topic)
        if got != want:
            fail(f"{topic}: got {None if got is None else (len(got[0]), got[1])}, expected {(len(want[0]), want[1])}")
    publisher.close()
    subscriber.close()
    print("ok")


if __name__ == "__main__":
    main()
