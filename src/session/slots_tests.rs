use bytes::{Bytes, BytesMut};

use super::*;

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn flushed(q: &mut Slots) -> String {
    let mut out = BytesMut::new();
    q.flush(&mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

fn plain(q: &mut Slots) -> u64 {
    q.push(false, false, Hook::None, Track::None)
}

#[test]
fn replies_leave_in_request_order() {
    let mut q = Slots::new();
    let (a, c, d) = (plain(&mut q), plain(&mut q), plain(&mut q));
    assert_eq!((a, c, d), (1, 2, 3));
    assert_eq!(q.next_seq(), 4);
    q.complete(c, b(":2\r\n")).unwrap();
    q.complete(d, b(":3\r\n")).unwrap();
    assert_eq!(q.held_bytes(), 8);
    assert_eq!(flushed(&mut q), "", "the first reply is still due");
    assert_eq!(q.len(), 3);
    q.complete(a, b(":1\r\n")).unwrap();
    assert_eq!(q.held_bytes(), 12);
    assert_eq!(flushed(&mut q), ":1\r\n:2\r\n:3\r\n");
    assert_eq!(q.held_bytes(), 0);
    assert!(q.is_empty());
}

#[test]
fn a_slot_completes_once() {
    let mut q = Slots::new();
    let a = q.push(false, true, Hook::Db(2), Track::Write);
    let done = q.complete(a, b("+OK\r\n")).unwrap();
    assert_eq!(
        done,
        Completed {
            hook: Hook::Db(2),
            track: Track::Write,
            on_dedicated: true,
            ok: true,
            array: false,
        }
    );
    assert_eq!(q.complete(a, b("+again\r\n")), None);
    assert_eq!(q.held_bytes(), 5);
    assert_eq!(flushed(&mut q), "+OK\r\n");
    // Written and gone: a late reply finds nothing.
    assert_eq!(q.complete(a, b("+late\r\n")), None);
    assert_eq!(q.complete(99, b("+never\r\n")), None);
    assert_eq!(q.held_bytes(), 0);
}

#[test]
fn errors_and_arrays_are_told_apart() {
    let mut q = Slots::new();
    let e = q.push(false, false, Hook::Exec, Track::None);
    let x = q.push(false, false, Hook::Exec, Track::None);
    let done = q.complete(e, b("-EXECABORT x\r\n")).unwrap();
    assert_eq!((done.ok, done.array, done.hook), (false, false, Hook::Exec));
    let done = q.complete(x, b("*1\r\n+OK\r\n")).unwrap();
    assert_eq!((done.ok, done.array), (true, true));
}

#[test]
fn silent_replies_are_awaited_not_written() {
    let mut q = Slots::new();
    let a = q.push(true, false, Hook::None, Track::None);
    let c = plain(&mut q);
    q.complete(c, b("+second\r\n")).unwrap();
    assert_eq!(flushed(&mut q), "");
    q.complete(a, b("+first\r\n")).unwrap();
    assert_eq!(q.held_bytes(), 17);
    assert_eq!(flushed(&mut q), "+second\r\n");
    assert_eq!(q.held_bytes(), 0);
}

#[test]
fn stream_frames_follow_their_request() {
    let mut q = Slots::new();
    let sub = q.push(false, true, Hook::None, Track::None);
    let get = plain(&mut q);
    // A message after SUBSCRIBE was passed, before GET is answered.
    q.stream(sub, b(">msg1\r\n"));
    q.stream(sub, b(">msg2\r\n"));
    assert_eq!(q.held_bytes(), 14);
    q.complete(get, b("$1\r\nv\r\n")).unwrap();
    assert_eq!(flushed(&mut q), "");
    q.complete(sub, Bytes::new()).unwrap();
    assert_eq!(q.held_bytes(), 21);
    assert_eq!(flushed(&mut q), ">msg1\r\n>msg2\r\n$1\r\nv\r\n");
    assert_eq!(q.held_bytes(), 0);
}

#[test]
fn stray_frames_go_before_pending_replies() {
    let mut q = Slots::new();
    let sub = plain(&mut q);
    q.complete(sub, b("+x\r\n")).unwrap();
    assert_eq!(flushed(&mut q), "+x\r\n");
    let next = plain(&mut q);
    // Its request is written and gone; nothing later is answered yet.
    q.stream(sub, b(">m\r\n"));
    assert_eq!(q.held_bytes(), 0, "stray frames are written at once");
    assert_eq!(flushed(&mut q), ">m\r\n");
    q.complete(next, b("+y\r\n")).unwrap();
    assert_eq!(flushed(&mut q), "+y\r\n");
    // A frame after an unknown, later request is dropped.
    let last = plain(&mut q);
    q.stream(0, b(">old\r\n"));
    q.stream(last + 5, b(">bogus\r\n"));
    assert_eq!(flushed(&mut q), ">old\r\n");
}

#[test]
fn waiting_dedicated_slots_are_found_in_order() {
    let mut q = Slots::new();
    let _ = plain(&mut q);
    let d1 = q.push(false, true, Hook::None, Track::None);
    let d2 = q.push(false, true, Hook::None, Track::None);
    assert_eq!(q.first_waiting_dedicated(), Some(d1));
    q.complete(d1, b("-ERR reset\r\n")).unwrap();
    assert_eq!(q.first_waiting_dedicated(), Some(d2));
    q.complete(d2, b("-ERR reset\r\n")).unwrap();
    assert_eq!(q.first_waiting_dedicated(), None);
}
