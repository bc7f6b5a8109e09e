/* The gzip decoder of clb-convert: ISA-L's inflate (Debian libisal2), reached through this
 * shim so that Rust never declares struct inflate_state: its layout is whatever the installed
 * <isa-l/igzip_lib.h> says, compiled here against that very header.
 *
 * The gzip header is parsed by the Rust side, not by ISA-L: ISA-L 2.30 (Debian bookworm)
 * forgets a header's flags when the header is split between two calls (fixed upstream in
 * 2.31), and would then misread the optional fields of a member that straddles a read. ISA-L
 * inflates the deflate data and verifies the trailer (CRC-32 and length) that follows it. */
#include <isa-l/igzip_lib.h>
#include <stdint.h>
#include <stdlib.h>

struct inflate_state *clb_isal_gzip_new(void)
{
	struct inflate_state *state = malloc(sizeof(*state));
	if (state != NULL) {
		isal_inflate_init(state);
		state->crc_flag = ISAL_GZIP_NO_HDR_VER; /* verify the trailer's CRC-32 and size */
	}
	return state;
}

void clb_isal_gzip_free(struct inflate_state *state)
{
	free(state);
}

/* Starts the next gzip member of a multi-member stream (after its header). */
void clb_isal_gzip_reset(struct inflate_state *state)
{
	isal_inflate_reset(state);
	state->crc_flag = ISAL_GZIP_NO_HDR_VER;
}

/* ISA-L 2.30 adds avail_in to the bytes it holds in 32 bits, which read as overflowing its
 * small tmp_in_buffer near 4 GiB (not reproduced): never hand it more than 1 GiB at once. */
#define STEP_MAX ((size_t)1 << 30)

/* One call of isal_inflate over in[0..in_len) into out[0..out_len). Reports how much of each
 * was used and whether the member, trailer included, is complete; returns isal_inflate's code
 * (negative: corrupt input). Lengths above STEP_MAX are clamped. */
int clb_isal_gzip_step(struct inflate_state *state, const uint8_t *in, size_t in_len,
		       size_t *consumed, uint8_t *out, size_t out_len, size_t *produced,
		       int *member_done)
{
	uint32_t avail_in = (uint32_t)(in_len > STEP_MAX ? STEP_MAX : in_len);
	uint32_t avail_out = (uint32_t)(out_len > STEP_MAX ? STEP_MAX : out_len);
	int rc;

	/* ISA-L never writes through next_in; the field is not const in its header. */
	state->next_in = (uint8_t *)in;
	state->avail_in = avail_in;
	state->next_out = out;
	state->avail_out = avail_out;
	rc = isal_inflate(state);
	*consumed = avail_in - state->avail_in;
	*produced = avail_out - state->avail_out;
	*member_done = state->block_state == ISAL_BLOCK_FINISH;
	/* Nothing of ours may stay behind in the state between calls. */
	state->next_in = NULL;
	state->next_out = NULL;
	return rc;
}
