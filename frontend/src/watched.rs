//! Changing a `tokio::sync::watch` value without paying for a notify nobody waits on.

use tokio::sync::watch;

/// Applies `modify` to the value of `sender` and notifies its receivers, if it has any.
///
/// A notify locks each of the watch's eight notifier shards, which matters on paths taken
/// per append or per connection. Skipping it when there is no receiver loses nothing: a
/// receiver that subscribes meanwhile counts itself before it reads the value, and it reads
/// under the lock `send_if_modified` holds here, so it sees the new value.
pub(crate) fn modify_and_notify_watchers<T>(sender: &watch::Sender<T>, modify: impl FnOnce(&mut T)) {
    sender.send_if_modified(|value| {
        modify(value);
        sender.receiver_count() > 0
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_sees_changes_made_with_or_without_one() {
        let (sender, first) = watch::channel(0u32);
        drop(first);
        modify_and_notify_watchers(&sender, |n| *n += 1);
        let mut receiver = sender.subscribe();
        assert_eq!(*receiver.borrow_and_update(), 1, "a later receiver reads the value");
        modify_and_notify_watchers(&sender, |n| *n += 1);
        assert!(receiver.has_changed().unwrap(), "a receiver is notified");
        assert_eq!(*receiver.borrow_and_update(), 2);
    }
}
