// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// What srmigd's two BPF programs share: the uplinks' XDP program (fastpath.c) and the VM
// ports' TC program (vmport.c). Types, map value layouts written by crates/hostd/src/port/
// fastpath.rs, and the engine's flow hash. No libbpf headers: the programs are built with
// nothing but clang (scripts/build-bpf.sh).

#ifndef SRMIG_BPF_COMMON_H
#define SRMIG_BPF_COMMON_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define INLINE static inline __attribute__((always_inline))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

#define ACTION_FORWARD 1
#define ACTION_END 2
#define ACTION_ENCAP 3
#define ACTION_DX6 4
#define MAX_NEXTHOPS 256
#define MAX_END_SIDS 1024
#define MAX_REWRITE 128
#define MAX_ENCAPS 256

struct lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct route {
	__u32 action;
	__u32 index;
};

struct nexthop {
	__u32 max_frame;
	__u8 dst_mac[6];
	__u8 src_mac[6];
};

struct encap {
	__u32 len;             // bytes of rewrite: 40..MAX_REWRITE, a multiple of 8
	__u32 nexthop;
	__u32 next_header_at;  // offset in rewrite of the Next Header to set to 41
	__u32 hash;            // flow label: the engine's flow hash (else the inner one)
	__u8 rewrite[MAX_REWRITE];
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

// Whether the IPv6 next header is an extension header the engine walks
// (srmig_wire::IpProtocol::is_ipv6_ext: 0, 43, 44, 51, 60).
INLINE int is_ext(__u8 nh)
{
	return nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60;
}

INLINE __u64 be64(const __u8 *p)
{
	__u64 v;
	__builtin_memcpy(&v, p, 8);
	return __builtin_bswap64(v);
}

INLINE __u64 mix(__u64 h, __u64 x)
{
	h = (h ^ x) * 0xff51afd7ed558ccdULL;
	return h ^ (h >> 29);
}

// srmig_dataplane's flow_hash of the IPv6 packet at ip (w: its first word, host order).
INLINE __u32 flow_hash(const __u8 *ip, __u32 w)
{
	__u64 h = 0x9e3779b97f4a7c15ULL;
	h = mix(h, be64(ip + 16));
	h = mix(h, be64(ip + 8));
	h = mix(h, be64(ip + 32));
	h = mix(h, be64(ip + 24));
	h = mix(h, (__u64)(w & 0xfffff) | ((__u64)ip[6] << 32));
	__u32 fl = ((__u32)(h >> 32) ^ (__u32)h) & 0xfffff;
	return fl ? fl : 1;
}

#endif
