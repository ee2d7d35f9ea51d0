"""MQTT 3.1.1 over TCP: QoS 0, 1 and 2 publish and subscribe through paho-mqtt."""

import paho.mqtt.client as mqtt

from common import Client, fail, host_port


def main():
    host, port = host_port()
    subscriber = Client("paho-v311-sub", mqtt.MQTTv311)
    subscriber.connect(host, port)
    granted = subscriber.subscribe("paho/v311/#", qos=2)
    if [int(code.value) for code in granted] != [2]:
        fail(f"granted {granted}, expected QoS 2")

    publisher = Client("paho-v311-pub", mqtt.MQTTv311)
    publisher.connect(host, port)
    for qos in (0, 1, 2):
        publisher.publish(f"paho/v311/qos{qos}", f"message at qos {qos}".encode(), qos)

    received = {}
    for _ in range(3):
        message = subscriber.next_message()
        received[message.topic] = (message.payload, message.qos)
    for qos in (0, 1, 2):
        topic = f"paho/v311/qos{qos}"
        if received.get(topic) != (f"message at qos {qos}".encode(), qos):
            fail(f"{topic}: got {received.get(topic)}")
    publisher.close()
    subscriber.close()
    print("ok")


if __name__ == "__main__":
    main()
