//! Switchboard: the bounded queue between a socket and its transport.
//!
//! A drop-in for the part of `tokio::sync::mpsc` that a [`Socket`](crate::Socket)
//! uses (one sender, one receiver at a time, `try_send`, `try_reserve`, `recv`,
//! `close`), built to cost nothing while the socket is idle. A tokio bounded
//! channel allocates its first block of 32 slots when it is created: with a
//! `PacketBuf` in each slot that is about 5.4 KB per socket, held for the
//! socket's whole life although an idle socket has nothing queued. This queue
//! keeps its packets in a `VecDeque` that is allocated when the first packet
//! is queued and given back when the receiver finds the queue empty and waits,
//! so an idle socket holds one small shared state and nothing else.
//!
//! The bound is the same as the channel's: `len + reserved < capacity`, where a
//! [`Permit`] holds a place until it is used or dropped. [`Sender::send`] is
//! the one difference: it queues even beyond the bound (it is used only for
//! the single NOOP packet of a transport upgrade, which must not wait behind a
//! full buffer).
//!
//! The queue also holds the socket's one volatile item, which a `watch` channel
//! held before (a few hundred bytes more per socket): [`Sender::send_volatile`]
//! replaces it, and the receiver takes it when nothing else is queued. And the
//! socket's side can end the queue ([`Sender::end`]) when its session ends, so
//! that the transport's writer, which waits on [`Receiver::recv`] alone, sends
//! what is queued and stops.
use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use tokio::sync::{
    Notify,
    mpsc::error::{SendError, TryRecvError, TrySendError},
};

/// Creates a queue that holds at most `capacity` items (at least one).
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            reserved: 0,
            volatile: None,
            closed: false,
            ended: false,
            rx_waker: None,
        }),
        closed: Notify::new(),
        capacity: capacity.max(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Woken when the receiver closes the queue.
    closed: Notify,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// Places held by live [`Permit`]s.
    reserved: usize,
    /// The latest volatile item not yet received; boxed, as it is rarely used
    /// and an item can be a few hundred bytes.
    volatile: Option<Box<T>>,
    /// The receiver closed the queue (or is gone): nothing more is accepted.
    closed: bool,
    /// The sender ended the queue (or is gone): nothing more is accepted, and
    /// the receiver ends once the queue is drained.
    ended: bool,
    rx_waker: Option<Waker>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while the lock is held leaves the queue consistent (every
        // operation is a single push, pop or counter change).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `value` and wakes the receiver.
    fn push(&self, mut state: MutexGuard<'_, State<T>>, value: T) {
        state.items.push_back(value);
        wake_rx(state);
    }
}

/// Wakes the receiver if it waits, outside the lock.
fn wake_rx<T>(mut state: MutexGuard<'_, State<T>>) {
    let waker = state.rx_waker.take();
    drop(state);
    if let Some(w) = waker {
        w.wake();
    }
}

/// The sending half: the socket's handle to queue packets.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `value` if there is room and the queue is open.
    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let state = self.shared.lock();
        if state.closed || state.ended {
            return Err(TrySendError::Closed(value));
        }
        if state.items.len() + state.reserved >= self.shared.capacity {
            return Err(TrySendError::Full(value));
        }
        self.shared.push(state, value);
        Ok(())
    }

    /// Holds a place for one item, if there is room and the queue is open.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError<()>> {
        let mut state = self.shared.lock();
        if state.closed || state.ended {
            return Err(TrySendError::Closed(()));
        }
        if state.items.len() + state.reserved >= self.shared.capacity {
            return Err(TrySendError::Full(()));
        }
        state.reserved += 1;
        Ok(Permit { sender: self })
    }

    /// Queues `value` whatever the bound (see the module's documentation);
    /// fails only when the queue is closed.
    pub(crate) async fn send(&self, value: T) -> Result<(), SendError<T>> {
        let state = self.shared.lock();
        if state.closed || state.ended {
            return Err(SendError(value));
        }
        self.shared.push(state, value);
        Ok(())
    }

    /// Sets the volatile item (replacing one not yet received); false when
    /// the queue is closed.
    pub(crate) fn send_volatile(&self, value: T) -> bool {
        let mut state = self.shared.lock();
        if state.closed || state.ended {
            return false;
        }
        state.volatile = Some(Box::new(value));
        wake_rx(state);
        true
    }

    /// Ends the queue from the sending side: nothing more is accepted, and the
    /// receiver gets what is queued, then `None`. Unlike [`Receiver::close`],
    /// this does not make the queue closed: [`Sender::closed`] still waits for
    /// the receiver (the transport) to close it once it has written what was
    /// queued.
    pub(crate) fn end(&self) {
        let mut state = self.shared.lock();
        state.ended = true;
        wake_rx(state);
    }

    /// Whether the receiver closed the queue.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Resolves once the receiver closed the queue.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.shared.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.end();
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Sender")
            .field("len", &state.items.len())
            .field("reserved", &state.reserved)
            .field("closed", &state.closed)
            .finish()
    }
}

/// A place held in the queue for one item.
pub(crate) struct Permit<'a, T> {
    sender: &'a Sender<T>,
}

impl<T> Permit<'_, T> {
    /// Queues `value` in the place this permit held. If the receiver closed
    /// the queue meanwhile, `value` is dropped, as a closed channel's is.
    pub(crate) fn send(self, value: T) {
        // The place becomes the item's: one lock, and `Drop` has nothing to do.
        let sender = self.sender;
        std::mem::forget(self);
        let shared = &sender.shared;
        let mut state = shared.lock();
        state.reserved = state.reserved.saturating_sub(1);
        if state.closed {
            drop(state);
            drop(value);
        } else {
            shared.push(state, value);
        }
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        let mut state = self.sender.shared.lock();
        state.reserved = state.reserved.saturating_sub(1);
    }
}

/// The receiving half, held by the transport that writes to the client.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next item; `None` once the queue is closed (or its sender gone)
    /// and drained. When it finds the queue empty it gives back the queue's
    /// storage before waiting, so an idle socket holds none.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        if let Some(v) = state
            .items
            .pop_front()
            .or_else(|| state.volatile.take().map(|v| *v))
        {
            return Poll::Ready(Some(v));
        }
        if state.closed || state.ended {
            return Poll::Ready(None);
        }
        if state.items.capacity() > 0 {
            state.items = VecDeque::new();
        }
        match &mut state.rx_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for the next item (see [`Receiver::poll_recv`]).
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if one is queued.
    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = self.shared.lock();
        match state
            .items
            .pop_front()
            .or_else(|| state.volatile.take().map(|v| *v))
        {
            Some(v) => Ok(v),
            None if state.closed || state.ended => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Closes the queue: nothing more is accepted; what is queued can still
    /// be received.
    pub(crate) fn close(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        drop(state);
        self.shared.closed.notify_waiters();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Receiver")
            .field("len", &state.items.len())
            .field("closed", &state.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bound_counts_queued_and_reserved() {
        let (tx, mut rx) = channel::<u32>(2);
        tx.try_send(1).unwrap();
        let permit = tx.try_reserve().unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
        permit.send(2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        // A dropped permit gives its place back.
        drop(tx.try_reserve().unwrap());
        tx.try_send(4).unwrap();
        tx.try_send(5).unwrap();
        assert!(tx.try_send(6).is_err());
    }

    #[tokio::test]
    async fn close_refuses_new_items_and_keeps_queued_ones() {
        let (tx, mut rx) = channel::<u32>(4);
        tx.try_send(1).unwrap();
        let waiter = tokio::spawn(async move {
            tx.closed().await;
            (tx.is_closed(), tx.try_send(2).is_err())
        });
        tokio::task::yield_now().await;
        rx.close();
        assert_eq!(waiter.await.unwrap(), (true, true));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn storage_is_given_back_when_drained() {
        let (tx, mut rx) = channel::<u32>(8);
        for i in 0..5 {
            tx.try_send(i).unwrap();
        }
        assert!(rx.shared.lock().items.capacity() >= 5);
        for i in 0..5 {
            assert_eq!(rx.recv().await, Some(i));
        }
        let pending = futures_util::FutureExt::now_or_never(rx.recv());
        assert_eq!(pending, None);
        assert_eq!(rx.shared.lock().items.capacity(), 0);
        // A waiting receiver is woken by the next item.
        let reader = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(9).unwrap();
        assert_eq!(reader.await.unwrap(), Some(9));
    }

    #[tokio::test]
    async fn volatile_item_is_the_latest_and_comes_after_queued_ones() {
        let (tx, mut rx) = channel::<u32>(4);
        assert!(tx.send_volatile(1));
        assert!(tx.send_volatile(2));
        tx.try_send(10).unwrap();
        assert_eq!(rx.recv().await, Some(10));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        rx.close();
        assert!(!tx.send_volatile(3));
    }

    #[tokio::test]
    async fn ending_from_the_sender_wakes_the_receiver_after_what_is_queued() {
        let (tx, mut rx) = channel::<u32>(4);
        tx.try_send(1).unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(v);
            }
            got
        });
        tokio::task::yield_now().await;
        tx.try_send(2).unwrap();
        tx.end();
        assert!(tx.try_send(3).is_err());
        assert!(!tx.is_closed());
        assert_eq!(reader.await.unwrap(), vec![1, 2]);
        // The reader is gone (dropped): now the queue is closed.
        tx.closed().await;
    }

    #[tokio::test]
    async fn receiver_ends_when_the_sender_is_gone() {
        let (tx, mut rx) = channel::<u32>(2);
        tx.try_send(1).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv().await, None);
    }
}
