// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// srmigd's XDP program with the fast path: transit IPv6 and End forwarded in the kernel,
// everything else to srmigd's AF_XDP socket (as the six-instruction program does).
//
// The behaviour is specified in Rust by srmig_dataplane::FastTable::process (property-tested
// against the engine); crates/hostd/tests/xdp_fastpath.rs runs this program
// (BPF_PROG_TEST_RUN) and the Rust model on the same frames and compares. Keep the three in
// step: a change here is a change there.
//
// The maps are created and filled by srmigd (crates/hostd/src/port/fastpath.rs), which
// patches every reference to one of the symbols below with its map's fd: they are
// placeholders, only their names matter.
//
// Build (the object is checked in; `bash scripts/build-bpf.sh` rebuilds it, and a test in
// CI checks the checked-in object is what this source compiles to):
//   clang -O2 -target bpf -mcpu=v3 -c fastpath.c -o fastpath.o

#include "common.h"

enum { XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;
static long (*bpf_xdp_adjust_head)(struct xdp_md *ctx, int delta) = (void *)44;
static __u64 (*bpf_xdp_get_buff_len)(struct xdp_md *ctx) = (void *)188;

// Placeholders patched with map fds (see above).
char xsks SEC("maps");      // XSKMAP: rx queue -> srmigd's socket
char egress SEC("maps");    // DEVMAP: nexthop index -> egress ifindex
char routes SEC("maps");    // LPM_TRIE: struct lpm_key -> struct route
char domain SEC("maps");    // LPM_TRIE: struct lpm_key (source) -> __u32
char nexthops SEC("maps");  // ARRAY: nexthop index -> struct nexthop
char port SEC("maps");      // ARRAY[1]: struct port
char counters SEC("maps");  // PERCPU_ARRAY: slot -> struct counter
char encaps SEC("maps");    // ARRAY: policy index -> struct encap
char dx6s SEC("maps");      // ARRAY: End.DX6 index -> __u32 nexthop index

struct port {
	__u32 enabled;
	__u32 end_ok;
	__u8 mac[6];
	__u8 srh_ok;   // an SRH without TLVs passes the port's HMAC mode (End.DX6)
	__u8 pad;
	// (The map's value is 24 bytes: the VM port's program, bpf/vmport.c, reads a second
	// MAC after these 16.)
};

INLINE int punt(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

INLINE void count(__u32 slot, __u64 len)
{
	struct counter *c = bpf_map_lookup_elem(&counters, &slot);
	if (c) {
		c->packets += 1;
		c->bytes += len;
	}
}

INLINE struct route *lookup(void *map, const __u8 *addr)
{
	struct lpm_key k = { .prefixlen = 128 };
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(map, &k);
}

// The nexthop of a Forward route, if the frame fits its egress.
INLINE struct nexthop *forward_to(struct route *r, __u64 len, __u32 *index)
{
	if (!r || r->action != ACTION_FORWARD)
		return 0;
	__u32 i = r->index;
	struct nexthop *n = bpf_map_lookup_elem(&nexthops, &i);
	if (!n || len > n->max_frame)
		return 0;
	*index = i;
	return n;
}

SEC("xdp")
int srmig_xsk(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	__u32 zero = 0;
	struct port *p = bpf_map_lookup_elem(&port, &zero);
	if (!p || !p->enabled)
		return punt(ctx);
	if (data + 14 + 40 > end)
		return punt(ctx);
	// The whole frame: a jumbo frame is several buffers (the program is loaded with
	// BPF_F_XDP_HAS_FRAGS), of which data..end is the first; every header read here lies in
	// it (each access is checked against end).
	__u64 len = bpf_xdp_get_buff_len(ctx);
	// Ethernet: to the port's MAC, IPv6.
	for (int i = 0; i < 6; i++)
		if (data[i] != p->mac[i])
			return punt(ctx);
	if (data[12] != 0x86 || data[13] != 0xdd)
		return punt(ctx);
	__u8 *ip = data + 14;
	if ((ip[0] >> 4) != 6 || ((__u64)ip[4] << 8 | ip[5]) + 54 != len)
		return punt(ctx);
	__u8 *src = ip + 8, *dst = ip + 24;
	// Multicast destination; multicast, ::, ::1 or link-local source.
	if (dst[0] == 0xff || src[0] == 0xff || (src[0] == 0xfe && (src[1] & 0xc0) == 0x80))
		return punt(ctx);
	__u64 hi, lo;
	__builtin_memcpy(&hi, src, 8);
	__builtin_memcpy(&lo, src + 8, 8);
	if (hi == 0 && (lo == 0 || lo == 0x0100000000000000ULL))
		return punt(ctx);
	if (ip[7] <= 1)
		return punt(ctx);
	struct route *r = lookup(&routes, dst);
	if (!r)
		return punt(ctx);
	__u32 nhi = 0;
	struct nexthop *n;
	if (r->action == ACTION_FORWARD) {
		if (is_ext(ip[6]))
			return punt(ctx);
		n = forward_to(r, len, &nhi);
		if (!n)
			return punt(ctx);
		count(0, len);
	} else if (r->action == ACTION_END) {
		if (!p->end_ok || ip[6] != 43)
			return punt(ctx);
		struct lpm_key k = { .prefixlen = 128 };
		__builtin_memcpy(k.addr, src, 16);
		if (!bpf_map_lookup_elem(&domain, &k))
			return punt(ctx);
		__u8 *srh = ip + 40;
		if (srh + 8 > end)
			return punt(ctx);
		__u64 hel = srh[1], sl = srh[3], le = srh[4];
		__u64 srh_len = (hel + 1) * 8;
		if (is_ext(srh[0]) || 54 + srh_len > len || srh[2] != 4)
			return punt(ctx);
		if (sl == 0 || hel < 2 || le > hel / 2 - 1 || sl > le + 1)
			return punt(ctx);
		// A TLV area: the engine checks HMAC and TLVs.
		if (8 + 16 * (le + 1) < srh_len)
			return punt(ctx);
		__u8 *seg = srh + 8 + 16 * (sl - 1);
		if (seg + 16 > end || seg[0] == 0xff)
			return punt(ctx);
		n = forward_to(lookup(&routes, seg), len, &nhi);
		if (!n)
			return punt(ctx);
		srh[3] = sl - 1;
		__builtin_memcpy(dst, seg, 16);
		count(0, len);
		count(1 + MAX_NEXTHOPS + r->index, len);
	} else if (r->action == ACTION_DX6) {
		if (!p->srh_ok)
			return punt(ctx);
		struct lpm_key k = { .prefixlen = 128 };
		__builtin_memcpy(k.addr, src, 16);
		if (!bpf_map_lookup_elem(&domain, &k))
			return punt(ctx);
		__u64 inner_off;
		if (ip[6] == 41) {
			inner_off = 40;
		} else if (ip[6] == 43) {
			__u8 *srh = ip + 40;
			if (srh + 8 > end)
				return punt(ctx);
			__u64 hel = srh[1], le = srh[4];
			__u64 srh_len = (hel + 1) * 8;
			if (srh[0] != 41 || srh[2] != 4 || srh[3] != 0 || 54 + srh_len > len)
				return punt(ctx);
			if (8 + 16 * (le + 1) < srh_len)
				return punt(ctx);
			inner_off = 40 + srh_len;
		} else {
			return punt(ctx);
		}
		__u8 *in = ip + inner_off;
		if (in + 40 > end)
			return punt(ctx);
		if ((in[0] >> 4) != 6 || (((__u64)in[4] << 8) | in[5]) + 54 + inner_off != len)
			return punt(ctx);
		__u64 hi = be64(in + 8);
		if ((hi >> 56) == 0xff || (hi >> 54) == (0xfe80 >> 6) || hi == 0 || in[7] <= 1)
			return punt(ctx);
		__u32 d = r->index;
		__u32 *dn = bpf_map_lookup_elem(&dx6s, &d);
		if (!dn)
			return punt(ctx);
		nhi = *dn;
		struct nexthop *nx = bpf_map_lookup_elem(&nexthops, &nhi);
		if (!nx || len - inner_off > nx->max_frame)
			return punt(ctx);
		__u8 dmac[6], smac[6];
		__builtin_memcpy(dmac, nx->dst_mac, 6);
		__builtin_memcpy(smac, nx->src_mac, 6);
		// Drop the outer headers: the inner packet's Ethernet header is where they ended.
		if (bpf_xdp_adjust_head(ctx, (int)inner_off))
			return punt(ctx);
		data = (__u8 *)(long)ctx->data;
		end = (__u8 *)(long)ctx->data_end;
		if (data + 14 + 40 > end)
			return XDP_DROP; // cannot happen: the inner packet was checked above
		__builtin_memcpy(data, dmac, 6);
		__builtin_memcpy(data + 6, smac, 6);
		data[12] = 0x86;
		data[13] = 0xdd;
		data[14 + 7] -= 1;
		count(0, len);
		count(1 + MAX_NEXTHOPS + MAX_END_SIDS + MAX_ENCAPS + d, len);
		count(1 + nhi, len - inner_off);
		return bpf_redirect_map(&egress, nhi, 0);
	} else if (r->action == ACTION_ENCAP) {
		if (is_ext(ip[6]))
			return punt(ctx);
		__u32 k = r->index;
		struct encap *e = bpf_map_lookup_elem(&encaps, &k);
		if (!e)
			return punt(ctx);
		__u32 n = e->len;
		if (n < 40 || n > MAX_REWRITE || (n & 7) || e->next_header_at >= n)
			return punt(ctx);
		nhi = e->nexthop;
		n = n & 0xf8;
		struct nexthop *nx = bpf_map_lookup_elem(&nexthops, &nhi);
		if (!nx || len + n > nx->max_frame)
			return punt(ctx);
		__u32 w = ((__u32)ip[0] << 24) | ((__u32)ip[1] << 16) | ((__u32)ip[2] << 8) | ip[3];
		__u32 fl = e->hash ? flow_hash(ip, w) : (w & 0xfffff);
		__u32 outer = (6u << 28) | (w & 0x0ff00000) | fl;
		__u32 payload = n - 40 + (len - 14);
		__u32 nh_at = e->next_header_at;
		__u8 dmac[6], smac[6];
		__builtin_memcpy(dmac, nx->dst_mac, 6);
		__builtin_memcpy(smac, nx->src_mac, 6);
		ip[7] -= 1;
		if (bpf_xdp_adjust_head(ctx, -(int)n))
			goto undo_hop;
		data = (__u8 *)(long)ctx->data;
		end = (__u8 *)(long)ctx->data_end;
		__u8 *o = data + 14;
		// The rewrite, 8 bytes at a time.
		for (int i = 0; i < MAX_REWRITE / 8; i++) {
			if ((__u32)(i * 8) >= n)
				break;
			if (o + i * 8 + 8 > end)
				goto undo_head;
			__builtin_memcpy(o + i * 8, e->rewrite + i * 8, 8);
		}
		if (o + 40 > end)
			goto undo_head;
		o[0] = outer >> 24;
		o[1] = outer >> 16;
		o[2] = outer >> 8;
		o[3] = outer;
		o[4] = payload >> 8;
		o[5] = payload;
		if (nh_at >= MAX_REWRITE || o + nh_at + 1 > end)
			goto undo_head;
		o[nh_at] = 41;
		__builtin_memcpy(data, dmac, 6);
		__builtin_memcpy(data + 6, smac, 6);
		data[12] = 0x86;
		data[13] = 0xdd;
		count(0, len);
		count(1 + MAX_NEXTHOPS + MAX_END_SIDS + k, len);
		count(1 + nhi, len + n);
		return bpf_redirect_map(&egress, nhi, 0);
	undo_head:
		// Cannot happen (the frame grew by n); the frame goes back as it came.
		bpf_xdp_adjust_head(ctx, (int)n);
	undo_hop:
		// (A failed adjust_head invalidates packet pointers too.)
		data = (__u8 *)(long)ctx->data;
		end = (__u8 *)(long)ctx->data_end;
		if (data + 14 + 40 <= end)
			data[14 + 7] += 1;
		return punt(ctx);
	} else {
		return punt(ctx);
	}
	ip[7] -= 1;
	__builtin_memcpy(data, n->dst_mac, 6);
	__builtin_memcpy(data + 6, n->src_mac, 6);
	count(1 + nhi, len);
	return bpf_redirect_map(&egress, nhi, 0);
}

char _license[] SEC("license") = "GPL";
