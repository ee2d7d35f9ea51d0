"""Subscribers on their own topics: the broker's CPU per message.

N subscribers each subscribe to a topic of their own (own/0 ... own/N-1, QoS 0); one
publisher sends 100-byte messages round-robin over those topics at RATE msg/s for SECS
seconds. Every message concerns exactly one subscriber. The script prints how many were
sent and received, and the broker's CPU time over the run (from /proc/PID/stat), per
message.

    python3 benches/own_topics.py PORT BROKER_PID N RATE SECS

Loopback only; bounded by SECS (plus 2 s to connect and 1.5 s to drain). paho's loop
uses select(), so keep N below about 300. Needs paho-mqtt 2.x.
"""

import os
import sys
import threading
import time

import paho.mqtt.client as mqtt


def broker_cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    port, pid, n, rate, secs = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                float(sys.argv[4]), float(sys.argv[5]))
    received = [0]
    lock = threading.Lock()

    def on_message(_client, _userdata, _message):
        with lock:
            received[0] += 1

    subscribers = []
    for i in range(n):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"own-sub-{i}")
        client.on_message = on_message
        client.connect("127.0.0.1", port)
        client.subscribe(f"own/{i}", 0)
        client.loop_start()
        subscribers.append(client)
    time.sleep(2)

    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="own-pub")
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    cpu_before = broker_cpu_seconds(pid)
    start = time.time()
    sent = 0
    while time.time() - start < secs:
        due = int((time.time() - start) * rate)
        while sent < due:
            publisher.publish(f"own/{sent % n}", b"x" * 100, 0)
            sent += 1
        time.sleep(0.001)
    time.sleep(1.5)
    cpu = broker_cpu_seconds(pid) - cpu_before
    print(f"n={n} sent={sent} received={received[0]} broker_cpu_s={cpu:.2f} "
          f"cpu_per_msg_us={cpu / max(sent, 1) * 1e6:.0f}")
    for client in subscribers:
        client.loop_stop()
        client.disconnect()
    publisher.loop_stop()
    publisher.disconnect()
    return 0 if received[0] == sent else 1


if __name__ == "__main__":
    sys.exit(main())
