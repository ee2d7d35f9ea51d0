"""MQTT 5 over TCP: user properties pass through unchanged and the subscription identifier
comes back on the delivered message."""

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from common import Client, fail, host_port


def main():
    host, port = host_port()
    subscriber = Client("paho-v5-sub", mqtt.MQTTv5)
    subscriber.connect(host, port)
    sub_properties = Properties(PacketTypes.SUBSCRIBE)
    sub_properties.SubscriptionIdentifier = 42
    subscriber.subscribe("paho/v5/#", options=SubscribeOptions(qos=1), properties=sub_properties)

    publisher = Client("paho-v5-pub", mqtt.MQTTv5)
    publisher.connect(host, port)
    pub_properties = Properties(PacketTypes.PUBLISH)
    pub_properties.UserProperty = [("region", "eu"), ("trace", "abc-123"), ("region", "us")]
    pub_properties.ContentType = "text/plain"
    publisher.publish("paho/v5/props", b"with properties", 1, properties=pub_properties)

    message = subscriber.next_message()
    if message.topic != "paho/v5/props" or message.payload != b"with properties":
        fail(f"unexpected message {message.topic} {message.payload!r}")
    props = message.properties
    user = getattr(props, "UserProperty", None)
    if user != [("region", "eu"), ("trace", "abc-123"), ("region", "us")]:
        fail(f"user properties came back as {user}")
    identifiers = getattr(props, "SubscriptionIdentifier", None)
    if identifiers != [42]:
        fail(f"subscription identifiers came back as {identifiers}")
    if getattr(props, "ContentType", None) != "text/plain":
        fail(f"content type came back as {getattr(props, 'ContentType', None)}")
    publisher.close()
    subscriber.close()
    print("ok")


if __name__ == "__main__":
    main()
