//! A many-senders, one-receiver queue for the request path: sessions hand
//! requests to a pipe, pipes hand replies to a session.
//!
//! tokio's unbounded mpsc costs several atomic read-modify-writes per
//! message (slot index, ready bits, permit count, waker state) and a block
//! allocation every 32 messages. Here a message is a push under an
//! uncontended lock, the receiver takes everything queued in one lock, and
//! the receiver's task is woken only when the queue goes from empty to not
//! empty: a session that sends 16 pipelined requests wakes its pipe once.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct Queue<T> {
    items: VecDeque<T>,
    /// The receiver's waker, while it waits on an empty queue.
    waker: Option<Waker>,
    /// The receiver is gone: sends fail and hand the message back.
    closed: bool,
}

struct Shared<T> {
    queue: Mutex<Queue<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // A panic while holding the lock leaves a consistent queue (every
        // operation under it is a push or a take): keep using it.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mailbox::Sender")
    }
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A new mailbox.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            waker: None,
            closed: false,
        }),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Queues `item`; hands it back when the receiver is gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        let mut q = self.shared.lock();
        if q.closed {
            return Err(item);
        }
        q.items.push_back(item);
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Receiver<T> {
    /// The next message, waiting for one. Never `None` while a sender may
    /// still send; `None` once only this receiver holds the mailbox.
    /// Cancel-safe: nothing is taken unless it is returned.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut q = self.shared.lock();
            match q.items.pop_front() {
                Some(item) => Poll::Ready(Some(item)),
                None => self.wait(&mut q, cx).map(|()| None),
            }
        })
        .await
    }

    /// Waits until at least one message is queued, then moves up to
    /// `limit` of them to `buf`; 0 once every sender is gone.
    pub async fn recv_many(&mut self, buf: &mut Vec<T>, limit: usize) -> usize {
        poll_fn(|cx| {
            let mut q = self.shared.lock();
            if q.items.is_empty() {
                return self.wait(&mut q, cx).map(|()| 0);
            }
            let n = q.items.len().min(limit.max(1));
            buf.extend(q.items.drain(..n));
            Poll::Ready(n)
        })
        .await
    }

    /// The queue is empty: ready when no sender is left, else pending with
    /// the task's waker registered.
    fn wait(&self, q: &mut Queue<T>, cx: &mut Context<'_>) -> Poll<()> {
        if Arc::strong_count(&self.shared) == 1 {
            return Poll::Ready(());
        }
        match &mut q.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// A message already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.shared.lock().items.pop_front()
    }

    /// Appends what is queued to `buf`, in one lock, until `buf` holds
    /// `max` items; the rest stay queued.
    pub fn drain_vec(&mut self, buf: &mut Vec<T>, max: usize) {
        let mut q = self.shared.lock();
        let n = max.saturating_sub(buf.len()).min(q.items.len());
        buf.extend(q.items.drain(..n));
    }

    /// Moves everything queued to `buf` in one lock.
    pub fn drain_into(&mut self, buf: &mut VecDeque<T>) {
        let mut q = self.shared.lock();
        if buf.is_empty() {
            std::mem::swap(buf, &mut q.items);
        } else {
            buf.extend(q.items.drain(..));
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut q = self.shared.lock();
            q.closed = true;
            q.waker = None;
            std::mem::take(&mut q.items)
        };
        // Dropped outside the lock: a message may hold senders of this
        // very mailbox.
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_arrive_in_order_and_a_send_after_the_receiver_fails() {
        let (tx, mut rx) = channel::<u32>();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send(2).unwrap();
        tx.send(3).unwrap();
        assert_eq!(rx.recv().await, Some(1));
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 10).await, 2);
        assert_eq!(buf, vec![2, 3]);
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert_eq!(tx.send(4), Err(4));
        assert_eq!(tx2.send(5), Err(5));
    }

    #[test]
    fn drain_vec_fills_up_to_the_limit_and_leaves_the_rest_queued() {
        let (tx, mut rx) = channel::<u32>();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let mut buf = vec![9];
        rx.drain_vec(&mut buf, 3);
        assert_eq!(buf, vec![9, 0, 1]);
        rx.drain_vec(&mut buf, 3);
        assert_eq!(buf, vec![9, 0, 1]);
        rx.drain_vec(&mut buf, 10);
        assert_eq!(buf, vec![9, 0, 1, 2, 3, 4]);
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn recv_many_takes_at_most_the_limit() {
        let (tx, mut rx) = channel::<u32>();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 2).await, 2);
        assert_eq!(buf, vec![0, 1]);
        let mut rest = VecDeque::new();
        rx.drain_into(&mut rest);
        assert_eq!(rest, VecDeque::from(vec![2, 3, 4]));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_from_another_task() {
        let (tx, mut rx) = channel::<&'static str>();
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send("hello").unwrap();
            // tx dropped here: the receiver then sees the end.
        });
        assert_eq!(rx.recv().await, Some("hello"));
        sender.await.unwrap();
        assert_eq!(rx.recv().await, None);
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 4).await, 0);
    }
}
