/*
** Readers of the artifact formats that both libraries need (runtime/artifact.h): the GPU blob's
** view, every bound checked. libkvcc_rt reads it to launch, libkvcc to report what it compiled.
*/
#include <stdio.h>
#include <string.h>
#include "runtime/gpu.h"

int kr_gpu_view(const void *blob, size_t avail, KpCudaOut *v, const kvcc_gpu_header **hdr, char *why, size_t wn)
{
	memset(v, 0, sizeof *v);
	const kvcc_gpu_header *h = blob;
	if (!h || avail < sizeof *h || h->magic != KVCC_GPU_MAGIC)
		return snprintf(why, wn, "not a kvcc GPU artifact (bad magic)"), -1;
	if (h->abi != KVCC_GPU_ABI)
		return snprintf(why, wn, "GPU artifact ABI %u, this libkvcc reads %d", h->abi, KVCC_GPU_ABI), -1;
	if (h->size > avail || h->nkern < 1 || h->nkern > KVG_MAXKERN || h->nimg < 1 || h->nimg > KVG_MAXARCH ||
	    h->nthreads < 32 || h->nthreads > 1024 ||
	    sizeof *h + h->nkern * sizeof(kvcc_gpu_kernel) + h->nimg * sizeof(kvcc_gpu_image) > h->size)
		return snprintf(why, wn, "corrupted GPU artifact (header)"), -1;
	const char *b = blob;
	const kvcc_gpu_kernel *k = (const kvcc_gpu_kernel *)(h + 1);
	const kvcc_gpu_image *im = (const kvcc_gpu_image *)(k + h->nkern);
	v->nthreads = h->nthreads, v->nkern = h->nkern, v->nimg = h->nimg;
	v->has_compress = h->has_compress, v->has_decode = h->has_decode;
	v->nvrtc_major = h->nvrtc_major, v->nvrtc_minor = h->nvrtc_minor;
	memcpy(v->ws_coef, h->ws_coef, sizeof v->ws_coef);
	v->dec_part = h->has_decode ? kvg_dec_part(h->group, h->head_dim, h->nthreads) : 0;
	for (int i = 0; i < h->nkern; i++) {
		if (!memchr(k[i].name, 0, sizeof k[i].name) || k[i].role < KVG_SCORE || k[i].role > KVG_PAGED)
			return snprintf(why, wn, "corrupted GPU artifact (kernel %d)", i), -1;
		memcpy(v->kern[i].name, k[i].name, sizeof v->kern[i].name);
		v->kern[i].role = k[i].role, v->kern[i].phase = k[i].phase;
	}
	for (int i = 0; i < h->nimg; i++) {
		const kvcc_gpu_image *s = &im[i];
		KpCudaImage *d = &v->img[i];
		if (!memchr(s->arch, 0, sizeof s->arch) || s->ptx_off > h->size || s->ptx_len >= h->size - s->ptx_off ||
		    b[s->ptx_off + s->ptx_len] != 0 || s->cubin_off > h->size || s->cubin_len > h->size - s->cubin_off)
			return snprintf(why, wn, "corrupted GPU artifact (image %d)", i), -1;
		memcpy(d->arch, s->arch, sizeof d->arch);
		d->sm = s->sm, d->tile = s->tile;
		d->ptx = (char *)(b + s->ptx_off), d->nptx = s->ptx_len;
		d->cubin = s->cubin_len ? (void *)(b + s->cubin_off) : NULL, d->ncubin = s->cubin_len;
		for (int j = 0; j < KVG_MAXKERN; j++) {
			d->regs[j] = s->regs[j], d->smem[j] = s->smem[j], d->spill[j] = s->spill[j];
			d->dsmem[j] = s->dsmem[j];
		}
	}
	if (hdr)
		*hdr = h;
	return 0;
}

