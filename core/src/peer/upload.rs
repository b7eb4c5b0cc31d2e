//! The requests a peer made of us, waiting to be served, in arrival order.
//!
//! Bounded at `N` requests (the shell advertises `N` as its BEP 10 `reqq`).
//! A request past that is handed back by [`UploadQueue::push`]: with BEP 6
//! the shell rejects it ([`PeerSession::reject`](super::PeerSession::reject)),
//! without it the shell drops it (BEP 3: the peer asks again after its own
//! timeout). A duplicate of a queued request is taken once.
//!
//! The front request may be *started* ([`UploadQueue::start`]): its `piece`
//! message is partly written, so a cancel or a choke no longer withdraws it —
//! a message cannot be cut short on the wire.
//!
//! BEP 6: with the fast extension a choke does not discard requests, each
//! must be rejected; [`UploadQueue::on_choke`] drains the withdrawable ones
//! for that (without the fast extension the shell just drops them).

use crate::pieces::BlockRequest;

/// A request that did not fit: the queue already holds `N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected(pub BlockRequest);

impl core::fmt::Display for Rejected {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "upload queue full: request piece {} begin {} length {}",
            self.0.index, self.0.begin, self.0.length
        )
    }
}

impl core::error::Error for Rejected {}

/// Requests waiting to be served, at most `N`.
#[derive(Clone, Debug, Default)]
pub struct UploadQueue<const N: usize> {
    queue: heapless::Deque<BlockRequest, N>,
    started: bool,
}

impl<const N: usize> UploadQueue<N> {
    /// An empty queue.
    pub const fn new() -> Self {
        UploadQueue {
            queue: heapless::Deque::new(),
            started: false,
        }
    }

    /// Queues `req`, or hands it back when `N` are waiting. A request
    /// already queued is not queued twice (`Ok`).
    pub fn push(&mut self, req: BlockRequest) -> Result<(), Rejected> {
        if self.contains(req) {
            return Ok(());
        }
        self.queue.push_back(req).map_err(Rejected)
    }

    /// The peer withdrew `req` (BEP 3 `cancel`): true if it was queued and
    /// not started, and is now gone.
    pub fn cancel(&mut self, req: BlockRequest) -> bool {
        let before = self.queue.len();
        let started = self.started;
        let mut first = true;
        self.queue.retain(|q| {
            let keep = *q != req || (first && started);
            first = false;
            keep
        });
        self.queue.len() < before
    }

    /// The next request to serve.
    pub fn peek(&self) -> Option<BlockRequest> {
        self.queue.front().copied()
    }

    /// Marks the front request as being written (its `piece` message is
    /// partly sent) and returns it: from now on only [`Self::pop`] removes
    /// it.
    pub fn start(&mut self) -> Option<BlockRequest> {
        let front = self.peek();
        self.started = front.is_some();
        front
    }

    /// True while the front request is started.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Removes and returns the front request (served in full).
    pub fn pop(&mut self) -> Option<BlockRequest> {
        self.started = false;
        self.queue.pop_front()
    }

    /// We choked the peer: the requests to reject (BEP 6) or drop (BEP 3),
    /// that is every queued one but a started front. Each is removed as the
    /// iterator yields it; those not taken stay queued (e.g. when the
    /// session's control queue is full, take the rest later:
    /// [`Drain::peek`] before committing with `next`).
    pub fn on_choke(&mut self) -> Drain<'_, N> {
        Drain { queue: self }
    }

    /// True if `req` is queued.
    pub fn contains(&self, req: BlockRequest) -> bool {
        self.queue.iter().any(|q| *q == req)
    }

    /// Requests queued (a started one included).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True if a [`Self::push`] of a new request would be refused.
    pub fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The queued requests, front first.
    pub fn iter(&self) -> impl Iterator<Item = BlockRequest> + '_ {
        self.queue.iter().copied()
    }

    /// Forgets everything (the connection closed).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.started = false;
    }
}

/// The requests withdrawn by a choke ([`UploadQueue::on_choke`]), front
/// first; a started front request is left to finish.
#[derive(Debug)]
pub struct Drain<'a, const N: usize> {
    queue: &'a mut UploadQueue<N>,
}

impl<const N: usize> Drain<'_, N> {
    /// The request `next` would yield, without removing it.
    pub fn peek(&self) -> Option<BlockRequest> {
        let skip = usize::from(self.queue.started);
        self.queue.queue.get(skip).copied()
    }
}

impl<const N: usize> Iterator for Drain<'_, N> {
    type Item = BlockRequest;

    fn next(&mut self) -> Option<BlockRequest> {
        if self.queue.started {
            // Keep the started front; take the one behind it.
            let front = self.queue.queue.pop_front()?;
            let next = self.queue.queue.pop_front();
            // Cannot fail: one slot was just freed.
            let _ = self.queue.queue.push_front(front);
            next
        } else {
            self.queue.queue.pop_front()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn r(index: u32) -> BlockRequest {
        BlockRequest {
            index,
            begin: 0,
            length: 16384,
        }
    }

    #[test]
    fn bounded_in_order_and_hands_back_overflow() {
        let mut q = UploadQueue::<3>::new();
        assert_eq!(q.capacity(), 3);
        for i in 0..3 {
            assert_eq!(q.push(r(i)), Ok(()));
        }
        assert!(q.is_full());
        assert_eq!(q.push(r(9)), Err(Rejected(r(9))));
        // A duplicate is taken once, even when full.
        assert_eq!(q.push(r(1)), Ok(()));
        assert_eq!(q.len(), 3);
        assert_eq!(q.iter().collect::<Vec<_>>(), [r(0), r(1), r(2)]);
        assert_eq!(q.pop(), Some(r(0)));
        assert_eq!(q.push(r(9)), Ok(()));
        assert_eq!(q.pop(), Some(r(1)));
        assert_eq!(q.pop(), Some(r(2)));
        assert_eq!(q.pop(), Some(r(9)));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn cancel_spares_a_started_front() {
        let mut q = UploadQueue::<4>::new();
        for i in 0..3 {
            q.push(r(i)).unwrap();
        }
        assert!(q.cancel(r(1)));
        assert!(!q.cancel(r(1)), "already gone");
        assert!(!q.cancel(r(7)), "never queued");
        assert_eq!(q.start(), Some(r(0)));
        assert!(q.is_started());
        assert!(!q.cancel(r(0)), "being written");
        assert_eq!(q.iter().collect::<Vec<_>>(), [r(0), r(2)]);
        assert_eq!(q.pop(), Some(r(0)));
        assert!(!q.is_started());
        // Not started: the front can be withdrawn.
        assert!(q.cancel(r(2)));
        assert!(q.is_empty());
        assert_eq!(q.start(), None);
        assert!(!q.is_started());
    }

    #[test]
    fn choke_withdraws_all_but_a_started_front() {
        let mut q = UploadQueue::<4>::new();
        for i in 0..4 {
            q.push(r(i)).unwrap();
        }
        assert_eq!(q.on_choke().collect::<Vec<_>>(), [r(0), r(1), r(2), r(3)]);
        assert!(q.is_empty());

        for i in 0..4 {
            q.push(r(i)).unwrap();
        }
        q.start();
        assert_eq!(q.on_choke().collect::<Vec<_>>(), [r(1), r(2), r(3)]);
        assert_eq!(q.iter().collect::<Vec<_>>(), [r(0)]);
        assert!(q.is_started());
        assert_eq!(q.on_choke().next(), None);
        assert_eq!(q.pop(), Some(r(0)));
    }

    #[test]
    fn choke_drain_stops_where_the_caller_stops() {
        let mut q = UploadQueue::<4>::new();
        for i in 0..4 {
            q.push(r(i)).unwrap();
        }
        q.start();
        // Room to reject one now: peek, send, commit; the rest wait.
        let mut d = q.on_choke();
        assert_eq!(d.peek(), Some(r(1)));
        assert_eq!(d.next(), Some(r(1)));
        assert_eq!(d.peek(), Some(r(2)));
        assert_eq!(q.iter().collect::<Vec<_>>(), [r(0), r(2), r(3)]);
        assert_eq!(q.peek(), Some(r(0)));
        assert!(q.is_started());
    }

    #[test]
    fn clear_forgets_the_started_mark() {
        let mut q = UploadQueue::<2>::default();
        q.push(r(0)).unwrap();
        q.start();
        q.clear();
        assert!(q.is_empty() && !q.is_started());
        q.push(r(1)).unwrap();
        assert!(q.cancel(r(1)));
    }
}
