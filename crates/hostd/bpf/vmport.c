// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// srmigd's TC program on a VM port (attached with tcx at ingress): what a VM sends that the
// engine would forward by the main table or encapsulate with a mapping's H.Encaps(.Red)
// policy is forwarded in the kernel, straight to the uplink (bpf_redirect); everything else
// is passed on (TCX_NEXT) to srmigd's AF_PACKET socket, bound to ETH_P_IPV6, which sees only
// what this program passes.
//
// An interface that moves to another host's namespace with its VM takes the program along:
// srmigd turns it off (port.enabled = PORT_OFF: everything passed on with TCX_NEXT, to the
// next program, the new host's) when it sees the link go down or away, and detaches it. (Checking
// bpf_get_netns_cookie here does not work: for a frame a VM's own socket sent, tc's helper
// answers with the VM's namespace, not the interface's.)
//
// The behaviour is specified in Rust by srmig_dataplane::FastTable::process for a VM port's
// table (one with `sources`), property-tested against the engine;
// crates/hostd/tests/vm_fastpath.rs runs this program (BPF_PROG_TEST_RUN) and the Rust model
// on the same frames and compares. Keep the three in step.
//
// Why TC and not XDP (docs/perf.md, 2026-12-05): the skb keeps its GSO and checksum state.
// bpf_skb_adjust_room(.., ENCAP_L3_IPV6 | FIXED_GSO) keeps a TSO super-frame whole
// (SKB_GSO_IPXIP6) and its csum_start on the inner L4 header; bpf_redirect transmits through
// dev_queue_xmit, whose validate_xmit_skb segments and completes checksums as the uplink
// needs. A GSO frame is checked against the egress MTU per segment (headers + gso_size).
//
// The maps are created and filled by srmigd (crates/hostd/src/port/fastpath.rs), which patches
// every reference to one of the symbols below with its map's fd.
//
// Build (the object is checked in; `bash scripts/build-bpf.sh` rebuilds it):
//   clang -O2 -target bpf -mcpu=v3 -c vmport.c -o vmport.o

#include "common.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
// tcx: go on with the next program on the interface (or, after the last, the kernel's
// receive path, where srmigd's ETH_P_IPV6 socket takes the frame).
#define TCX_NEXT -1

// The prefix of the uapi's struct __sk_buff this program reads.
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	__u64 flow_keys;
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	__u64 sk;
	__u32 gso_size;
};

static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)23;
static long (*bpf_skb_pull_data)(struct __sk_buff *skb, __u32 len) = (void *)39;
static long (*bpf_skb_adjust_room)(struct __sk_buff *skb, int len_diff, __u32 mode,
				   __u64 flags) = (void *)50;

#define BPF_ADJ_ROOM_MAC 1
#define BPF_F_ADJ_ROOM_FIXED_GSO (1ULL << 0)
#define BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 (1ULL << 2)

// Placeholders patched with map fds.
char egress SEC("maps");    // ARRAY: nexthop index -> egress ifindex (0: none)
char routes SEC("maps");    // LPM_TRIE: struct lpm_key -> struct route
char nexthops SEC("maps");  // ARRAY: nexthop index -> struct nexthop
char port SEC("maps");      // ARRAY[1]: struct port
char counters SEC("maps");  // PERCPU_ARRAY: slot -> struct counter
char encaps SEC("maps");    // ARRAY: policy index -> struct encap
char sources SEC("maps");   // HASH: IPv6 source address -> its index in the table's sources
char passed SEC("maps");    // ARRAY[2] of __u64: [PASSED] IPv6 frames passed on to srmigd,
                            // [HANDLED] how many of those srmigd has read and sent

// srmig_dataplane::fastpath: 1 + MAX_NEXTHOPS + MAX_END_SIDS + MAX_ENCAPS + MAX_DX6.
#define SLOT_ENCAP (1 + MAX_NEXTHOPS + MAX_END_SIDS)
#define SLOT_SOURCE (1 + MAX_NEXTHOPS + MAX_END_SIDS + MAX_ENCAPS + 256) // + MAX_DX6

// port.enabled
#define PORT_OFF 0
#define PORT_ON 1
// A table written while srmigd may still hold frames the program passed: the program turns
// itself on (PORT_ON) at the first frame that finds passed[PASSED] == passed[HANDLED], i.e.
// every frame it passed has been read and sent by srmigd, whose sends are queued ahead of
// what the program redirects from then on (crates/hostd/src/port/mod.rs, FastWait).
#define PORT_ARMED 2
// passed[]
#define PASSED 0
#define HANDLED 1

struct port {
	__u32 enabled;
	__u32 end_ok;
	__u8 mac[6];      // the gateway MAC
	__u8 srh_ok;
	__u8 also_ok;     // also frames to also_mac (the port's own MAC)
	__u8 also_mac[6];
	__u8 pad[2];
};

// Passed on to srmigd: counted, so that srmigd knows when it has read everything the program
// passed (a table change waits for that before the program takes destinations over).
INLINE int pass(void)
{
	__u32 k = PASSED;
	__u64 *n = bpf_map_lookup_elem(&passed, &k);
	if (n)
		__sync_fetch_and_add(n, 1);
	return TCX_NEXT;
}

// An armed port turns on when srmigd has handled every frame passed so far (see PORT_ARMED);
// 1 if it is on now. The compare-and-swap loses to a write of srmigd's in between (e.g. the
// program turned off ahead of a configuration change): the frame is then passed.
INLINE int turn_on_if_caught_up(struct port *p)
{
	__u32 k = PASSED, h = HANDLED;
	__u64 *n = bpf_map_lookup_elem(&passed, &k);
	__u64 *done = bpf_map_lookup_elem(&passed, &h);
	if (!n || !done || *n != *done)
		return 0;
	return __sync_val_compare_and_swap(&p->enabled, PORT_ARMED, PORT_ON) == PORT_ARMED;
}

INLINE void count(__u32 slot, __u64 packets, __u64 len)
{
	struct counter *c = bpf_map_lookup_elem(&counters, &slot);
	if (c) {
		c->packets += packets;
		c->bytes += len;
	}
}

SEC("tc")
int srmig_vm(struct __sk_buff *skb)
{
	// Only IPv6 frames concern this program and srmigd's ETH_P_IPV6 socket; the others go to
	// srmigd's second socket, which takes every protocol but IPv6.
	if (skb->protocol != __builtin_bswap16(0x86dd))
		return TCX_NEXT;
	__u32 zero = 0;
	struct port *p = bpf_map_lookup_elem(&port, &zero);
	if (!p || p->enabled == PORT_OFF)
		return pass();
	if (p->enabled != PORT_ON && !turn_on_if_caught_up(p))
		return pass();
	__u64 len = skb->len;
	__u8 *data = (__u8 *)(long)skb->data;
	__u8 *end = (__u8 *)(long)skb->data_end;
	// The headers read below, in the linear part (a local stack's frames have them there).
	if (data + 14 + 40 + 20 > end && len >= 14 + 40) {
		bpf_skb_pull_data(skb, len < 14 + 40 + 20 ? len : 14 + 40 + 20);
		data = (__u8 *)(long)skb->data;
		end = (__u8 *)(long)skb->data_end;
	}
	if (data + 14 + 40 > end)
		return pass();
	// To the gateway MAC or (also_ok) the port's own: compared as 4 + 2 bytes (a byte loop
	// with two flags makes the verifier walk every combination).
	__u32 d0, g0, a0;
	__u16 d1, g1, a1;
	__builtin_memcpy(&d0, data, 4);
	__builtin_memcpy(&d1, data + 4, 2);
	__builtin_memcpy(&g0, p->mac, 4);
	__builtin_memcpy(&g1, p->mac + 4, 2);
	__builtin_memcpy(&a0, p->also_mac, 4);
	__builtin_memcpy(&a1, p->also_mac + 4, 2);
	if ((d0 != g0 || d1 != g1) && (!p->also_ok || d0 != a0 || d1 != a1))
		return pass();
	if (data[12] != 0x86 || data[13] != 0xdd)
		return pass();
	__u8 *ip = data + 14;
	if ((ip[0] >> 4) != 6 || ((__u64)ip[4] << 8 | ip[5]) + 54 != len)
		return pass();
	__u8 *src = ip + 8, *dst = ip + 24;
	if (dst[0] == 0xff || src[0] == 0xff || (src[0] == 0xfe && (src[1] & 0xc0) == 0x80))
		return pass();
	__u64 hi, lo;
	__builtin_memcpy(&hi, src, 8);
	__builtin_memcpy(&lo, src + 8, 8);
	if (hi == 0 && (lo == 0 || lo == 0x0100000000000000ULL))
		return pass();
	__u8 saddr[16];
	__builtin_memcpy(saddr, src, 16);
	__u32 *si = bpf_map_lookup_elem(&sources, saddr);
	if (!si)
		return pass();
	__u32 src_slot = SLOT_SOURCE + (*si & 0xff);
	if (ip[7] <= 1)
		return pass();
	struct lpm_key k = { .prefixlen = 128 };
	__builtin_memcpy(k.addr, dst, 16);
	struct route *r = bpf_map_lookup_elem(&routes, &k);
	if (!r || is_ext(ip[6]))
		return pass();
	// The length each packet will have on the wire: a GSO frame's segments are its headers
	// and gso_size bytes of payload.
	__u64 seg = len;
	__u64 packets = 1;
	__u32 gso = skb->gso_size;
	if (gso) {
		__u64 l4;
		if (ip[6] == 6) {
			if (ip + 40 + 13 > end)
				return pass();
			l4 = (ip[40 + 12] >> 4) * 4;
		} else if (ip[6] == 17) {
			l4 = 8;
		} else {
			return pass();
		}
		seg = 54 + l4 + gso;
		if (seg > len)
			seg = len;
		packets = skb->gso_segs ? skb->gso_segs : 1;
	}
	__u32 nhi;
	struct nexthop *nx;
	if (r->action == ACTION_FORWARD) {
		nhi = r->index;
		nx = bpf_map_lookup_elem(&nexthops, &nhi);
		if (!nx || seg > nx->max_frame)
			return pass();
		__u32 *ifindex = bpf_map_lookup_elem(&egress, &nhi);
		if (!ifindex || !*ifindex)
			return pass();
		__u32 out = *ifindex;
		ip[7] -= 1;
		__builtin_memcpy(data, nx->dst_mac, 6);
		__builtin_memcpy(data + 6, nx->src_mac, 6);
		count(0, packets, len);
		count(src_slot, packets, len);
		count(1 + nhi, packets, len);
		return bpf_redirect(out, 0);
	}
	if (r->action != ACTION_ENCAP)
		return pass();
	__u32 ki = r->index;
	struct encap *e = bpf_map_lookup_elem(&encaps, &ki);
	if (!e)
		return pass();
	__u32 n = e->len;
	if (n < 40 || n > MAX_REWRITE || (n & 7) || e->next_header_at >= n)
		return pass();
	n = n & 0xf8;
	nhi = e->nexthop;
	nx = bpf_map_lookup_elem(&nexthops, &nhi);
	if (!nx || seg + n > nx->max_frame)
		return pass();
	__u32 *ifindex = bpf_map_lookup_elem(&egress, &nhi);
	if (!ifindex || !*ifindex)
		return pass();
	__u32 out = *ifindex;
	__u32 w = ((__u32)ip[0] << 24) | ((__u32)ip[1] << 16) | ((__u32)ip[2] << 8) | ip[3];
	__u32 fl = e->hash ? flow_hash(ip, w) : (w & 0xfffff);
	__u32 outer = (6u << 28) | (w & 0x0ff00000) | fl;
	__u64 payload = n - 40 + (len - 14);
	if (payload > 0xffff)
		return pass();
	__u32 nh_at = e->next_header_at;
	__u8 dmac[6], smac[6];
	__builtin_memcpy(dmac, nx->dst_mac, 6);
	__builtin_memcpy(smac, nx->src_mac, 6);
	ip[7] -= 1;
	if (bpf_skb_adjust_room(skb, (int)n, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV6))
		goto undo_hop;
	data = (__u8 *)(long)skb->data;
	end = (__u8 *)(long)skb->data_end;
	__u8 *o = data + 14;
	for (int i = 0; i < MAX_REWRITE / 8; i++) {
		if ((__u32)(i * 8) >= n)
			break;
		if (o + i * 8 + 8 > end)
			return TC_ACT_SHOT; // cannot happen: the room is in the linear part
		__builtin_memcpy(o + i * 8, e->rewrite + i * 8, 8);
	}
	if (o + 40 > end || nh_at >= MAX_REWRITE || o + nh_at + 1 > end)
		return TC_ACT_SHOT; // cannot happen (as above)
	o[0] = outer >> 24;
	o[1] = outer >> 16;
	o[2] = outer >> 8;
	o[3] = outer;
	o[4] = payload >> 8;
	o[5] = payload;
	o[nh_at] = 41;
	__builtin_memcpy(data, dmac, 6);
	__builtin_memcpy(data + 6, smac, 6);
	data[12] = 0x86;
	data[13] = 0xdd;
	count(0, packets, len);
	count(src_slot, packets, len);
	count(SLOT_ENCAP + ki, packets, len);
	count(1 + nhi, packets, len + n);
	return bpf_redirect(out, 0);
undo_hop:
	// adjust_room refused (e.g. a GSO type it cannot encapsulate): the frame goes to srmigd
	// as it came.
	data = (__u8 *)(long)skb->data;
	end = (__u8 *)(long)skb->data_end;
	if (data + 14 + 40 <= end)
		data[14 + 7] += 1;
	return pass();
}

char _license[] SEC("license") = "GPL";
