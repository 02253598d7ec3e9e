//! Re-steering frames that were delivered to a VM's port but never reached the VM.
//!
//! A hypervisor that stops a VM stops reading its backend: frames the driver already handed
//! to the VM's port may never reach the guest (srmigd's QEMU port finds them from the socket's
//! unread bytes and the QMP STOP; see `docs/qemu.md`). [`Dataplane::reinject_for_vm`] sends
//! such a frame where a packet for the VM goes *now*: with the VM stopped here and mapped onto
//! the migration path `S::End.S -> D::End.SBUF`, the inner packet is encapsulated again, this
//! node's End.S sees the VM not running and forwards it to the destination's End.SBUF, in the
//! same pass — behind nothing, ahead of every later packet, so order is kept when the driver
//! re-injects right after the state change.

use super::*;

impl Dataplane {
    /// Re-steers `frame`, an Ethernet frame this node delivered to `vm`'s port that the VM
    /// never received, toward the VM's current location: delivered again if the VM runs here,
    /// otherwise encapsulated with the VM address's mapping (a policy; local SIDs on the path
    /// run in the same pass) and forwarded. The result is left in `out` with its verdict (as
    /// [`Dataplane::process_packet`] does): `Tx(port)` to send, or a named drop (`UnknownVm`
    /// if the frame is not for `vm`, `VmNotRunning` without a policy to follow). Never panics
    /// on the frame's contents.
    pub fn reinject_for_vm(
        &mut self,
        now: Instant,
        vm: VmId,
        frame: &[u8],
        out: &mut PacketBuf,
    ) -> Verdict {
        let v = self.reinject(now, vm, frame, out);
        let v = self.conclude(now, out, v);
        out.verdict = v;
        v
    }

    fn reinject(&mut self, now: Instant, vm: VmId, frame: &[u8], out: &mut PacketBuf) -> Verdict {
        let Some(v) = self.vms.vms.get(vm.index()) else {
            return Verdict::Drop(DropReason::UnknownVm);
        };
        let (port, mac, running) = (v.port, v.mac, v.state == VmState::Running);
        if out.set_data(frame).is_err() {
            return Verdict::Drop(DropReason::FrameTooLarge);
        }
        out.ingress = port;
        let ctx = Ctx {
            now,
            ingress: port,
            kind: PortKind::Vm,
            src_mac: mac,
        };
        if out.end < out.start + ethernet::HEADER_LEN {
            return Verdict::Drop(DropReason::Truncated);
        }
        let ip = out.start + ethernet::HEADER_LEN;
        match EtherType(read_u16(&out.buf, out.start + 12)) {
            EtherType::IPV6 => {
                if let Err(r) = self.inner_v6(out, ip) {
                    return Verdict::Drop(r);
                }
                let dst = read_addr(&out.buf, ip + v6f::DST_ADDR.start);
                let e = self.vms.v6_entry(dst);
                if e.vm != Some(vm) {
                    return Verdict::Drop(DropReason::UnknownVm);
                }
                if running {
                    return self.deliver(&ctx, out, ip, vm, EtherType::IPV6);
                }
                let mut has_hbh = false;
                if IpProtocol(out.buf[ip + v6f::NEXT_HEADER]).is_ipv6_ext() {
                    match walk(&out.buf[ip..out.end]) {
                        Ok(c) => has_hbh = c.has_hbh,
                        Err(r) => return Verdict::Drop(r),
                    }
                }
                match self.steering_v6(dst, e) {
                    Some(Steering::Policy(p)) => self.apply_policy(&ctx, out, ip, p, true, has_hbh),
                    Some(Steering::Native) | None => {
                        self.counters.vms[vm.index()].dropped += 1;
                        Verdict::Drop(DropReason::VmNotRunning)
                    }
                }
            }
            EtherType::IPV4 => {
                if let Err(r) = self.inner_v4(out, ip) {
                    return Verdict::Drop(r);
                }
                let dst = read_u32(&out.buf, ip + v4f::DST_ADDR.start);
                if self.vms.by_v4(dst) != Some(vm) {
                    return Verdict::Drop(DropReason::UnknownVm);
                }
                if running {
                    return self.deliver(&ctx, out, ip, vm, EtherType::IPV4);
                }
                match self.mappings.v4.lookup(u128::from(dst)) {
                    Some((_, Steering::Policy(p))) => {
                        self.apply_policy(&ctx, out, ip, p, false, false)
                    }
                    _ => {
                        self.counters.vms[vm.index()].dropped += 1;
                        Verdict::Drop(DropReason::VmNotRunning)
                    }
                }
            }
            _ => Verdict::Drop(DropReason::UnsupportedEtherType),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::canon::*;
    use crate::testkit::*;
    use crate::*;
    use srmig_wire::ipv6::Packet as Ipv6Packet;
    use srmig_wire::srh::Srh;

    const T0: Instant = Instant::from_nanos(1_000_000_000);

    fn delivered(dp: &mut Dataplane) -> Vec<u8> {
        // What S handed to VM 1's port: a client's packet, delivered locally.
        let mut b = Batch::new(1);
        let payload = udp6_sized(client(), vm1(), 120);
        let f = eth(GATEWAY_MAC, CLIENT_MAC, 0x86dd, &payload);
        assert!(b.push(CLIENT_PORT, &f).expect("push"));
        dp.process_batch(T0, &mut b);
        let p = &b.packets()[0];
        assert_eq!(p.verdict, Verdict::Tx(VM1_PORT));
        p.data().to_vec()
    }

    #[test]
    fn a_frame_the_stopped_vm_never_read_follows_it_to_the_destination() {
        let mut s = Dataplane::new(host_config(S, VmState::Running)).expect("config");
        let vm = s.vm_id("vm1").expect("vm");
        let frame = delivered(&mut s);
        // The VM stops; its address is mapped onto the migration path.
        s.handle_vm_state(T0, vm, VmState::Paused).expect("state");
        let p = s.policy_id("via-s-to-d").expect("policy");
        s.set_mapping(
            "2001:db8:100::10/128".parse().expect("prefix"),
            Steering::Policy(p),
        )
        .expect("mapping");
        let mut out = PacketBuf::new();
        let v = s.reinject_for_vm(T0, vm, &frame, &mut out);
        assert_eq!(v, Verdict::Tx(UPLINK));
        assert_eq!(out.verdict, v);
        let o = Ipv6Packet::new_checked(&out.data()[14..]).expect("ipv6");
        // S's own End.S forwarded it: next segment D::End.SBUF, nothing left.
        assert_eq!(o.dst_addr(), sid(D, END_SBUF));
        let srh = Srh::new_checked(o.payload()).expect("srh");
        assert_eq!(srh.segments_left(), 0);
        // The inner packet is the one the VM never got, unchanged (hop limit included).
        let inner_at = 14 + 40 + srh.header_len();
        assert_eq!(&out.data()[inner_at..], &frame[14..]);
        assert_eq!(&out.data()[0..6], &router_mac(S));
        assert_eq!(
            s.counters()
                .sid(s.sid_id(sid(S, END_S)).expect("sid"))
                .packets,
            1
        );
    }

    #[test]
    fn running_vm_gets_it_again_and_bad_input_is_a_named_drop() {
        let mut s = Dataplane::new(host_config(S, VmState::Running)).expect("config");
        let vm = s.vm_id("vm1").expect("vm");
        let client_vm = s.vm_id("client").expect("vm");
        let frame = delivered(&mut s);
        let mut out = PacketBuf::new();
        // Still running here (e.g. the stream came back): delivered again.
        assert_eq!(
            s.reinject_for_vm(T0, vm, &frame, &mut out),
            Verdict::Tx(VM1_PORT)
        );
        assert_eq!(out.data(), &frame[..]);
        // Not for that VM.
        assert_eq!(
            s.reinject_for_vm(T0, client_vm, &frame, &mut out),
            Verdict::Drop(DropReason::UnknownVm)
        );
        // Stopped with no policy to follow: dropped, counted.
        s.handle_vm_state(T0, vm, VmState::Paused).expect("state");
        assert_eq!(
            s.reinject_for_vm(T0, vm, &frame, &mut out),
            Verdict::Drop(DropReason::VmNotRunning)
        );
        assert_eq!(s.counters().vm(vm).dropped, 1);
        // Garbage never panics.
        for len in [0, 5, 14, 20, 54, 60] {
            let junk = vec![0x86u8; len];
            let v = s.reinject_for_vm(T0, vm, &junk, &mut out);
            assert!(matches!(v, Verdict::Drop(_)), "{len}: {v:?}");
        }
        let mut short = frame.clone();
        short.truncate(40);
        assert!(matches!(
            s.reinject_for_vm(T0, vm, &short, &mut out),
            Verdict::Drop(_)
        ));
        assert_eq!(
            s.reinject_for_vm(T0, VmId(99), &frame, &mut out),
            Verdict::Drop(DropReason::UnknownVm)
        );
    }
}
