//! The queue from a connection's inbound half to its outbound half.
//!
//! Invariant: both halves are polled by the connection's one task, the inbound half first
//! on every wake-up (the biased `select!` in `connection::run_transport`). What the inbound
//! half pushes is therefore seen by the outbound half in the same poll. So, unlike a
//! channel, a message costs no wake-up of its own (a task waking itself is rescheduled, and
//! tokio then wakes another worker to steal it), and an idle connection holds no
//! preallocated block of slots. Debug builds assert that one task does both.
//!
//! The queue is bounded. When it is full, [`Handoff::push`] waits, which holds the inbound
//! half's reads (backpressure on the socket); [`Handoff::pop`] wakes it once there is room.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{Poll, Waker};

pub(crate) struct Handoff<T> {
    state: Mutex<State<T>>,
    capacity: usize,
}

struct State<T> {
    queue: VecDeque<T>,
    /// The pusher waiting for room, if the queue is full.
    waiting_for_room: Option<Waker>,
    /// The task that first used the queue (debug builds: see the module's invariant).
    #[cfg(debug_assertions)]
    task: Option<tokio::task::Id>,
}

impl<T> Handoff<T> {
    /// An empty queue holding at most `capacity` items (at least 1).
    pub(crate) fn new(capacity: usize) -> Handoff<T> {
        let state = State {
            queue: VecDeque::new(),
            waiting_for_room: None,
            #[cfg(debug_assertions)]
            task: None,
        };
        Handoff { state: Mutex::new(state), capacity: capacity.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        #[cfg_attr(not(debug_assertions), allow(unused_mut))]
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        #[cfg(debug_assertions)]
        if let Some(current) = tokio::task::try_id() {
            let first = *state.task.get_or_insert(current);
            debug_assert_eq!(first, current, "both halves of a connection run in one task");
        }
        state
    }

    /// Queues `item`, waiting while the queue is full.
    pub(crate) async fn push(&self, item: T) {
        let mut item = Some(item);
        poll_fn(|cx| {
            let mut state = self.lock();
            if state.queue.len() < self.capacity {
                state.queue.push_back(item.take().expect("pushed once"));
                Poll::Ready(())
            } else {
                state.waiting_for_room = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// The oldest item, if any; wakes a pusher waiting for room.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut state = self.lock();
        let item = state.queue.pop_front();
        if item.is_some()
            && let Some(waiting) = state.waiting_for_room.take()
        {
            waiting.wake();
        }
        item
    }

    /// Ready once something is queued. It registers no waker: under the module's invariant
    /// the outbound half is polled again right after every push.
    pub(crate) async fn queued(&self) {
        poll_fn(|_| if self.lock().queue.is_empty() { Poll::Pending } else { Poll::Ready(()) }).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Wake};

    use super::*;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn items_come_out_in_order_and_a_full_queue_holds_the_pusher_until_a_pop() {
        let handoff = Handoff::new(2);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);

        let mut queued = std::pin::pin!(handoff.queued());
        assert!(queued.as_mut().poll(&mut cx).is_pending(), "nothing queued yet");
        for item in [1, 2] {
            assert!(std::pin::pin!(handoff.push(item)).poll(&mut cx).is_ready());
        }
        assert!(queued.as_mut().poll(&mut cx).is_ready());

        let mut third = std::pin::pin!(handoff.push(3));
        assert!(third.as_mut().poll(&mut cx).is_pending(), "full at 2");
        assert!(!flag.0.load(Ordering::SeqCst));
        assert_eq!(handoff.pop(), Some(1));
        assert!(flag.0.load(Ordering::SeqCst), "a pop wakes the waiting pusher");
        assert!(third.as_mut().poll(&mut cx).is_ready());
        assert_eq!(handoff.pop(), Some(2));
        assert_eq!(handoff.pop(), Some(3));
        assert_eq!(handoff.pop(), None);
        assert!(std::pin::pin!(handoff.queued()).poll(&mut cx).is_pending());
    }
}
