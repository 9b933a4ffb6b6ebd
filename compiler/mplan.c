/*
** Sides of the merge rule's pair instructions and the form of its similarity (mplan.h).
*/
#include <stdlib.h>
#include <string.h>
#include "compiler/mplan.h"

void ki_msides(const KiFn *f, uint8_t *side)
{
	for (int i = 0; i < f->nins; i++) {
		const KiIns *in = &f->ins[i];
		uint8_t s = KI_MNONE;
		switch (in->op) {
		case KO_erow:
		case KO_tmean: s = KI_ME; break;
		case KO_krow: s = KI_MK; break;
		case KO_pinfo: s = in->aux == PI_ecount ? KI_ME : in->aux == PI_kcount ? KI_MK : KI_MNONE; break;
		default:
			for (int k = 0; k < 3; k++)
				if (KI_RKIND(in->arg[k]) == RK_INS && KI_RIDX(in->arg[k]) < i)
					s |= side[KI_RIDX(in->arg[k])];
		}
		side[i] = s;
	}
}

static uint8_t sideof(const uint8_t *side, KiRef r)
{
	return KI_RKIND(r) == RK_INS ? side[KI_RIDX(r)] : KI_MNONE;
}

/* Is instruction i the cross dot: dot over chan, [] result, one operand of each row? */
static int crossdot(const KiFn *f, const uint8_t *side, int i, int *eop, int *kop)
{
	const KiIns *in = &f->ins[i];
	if (in->op != KO_dot || in->axis != AX_chan || in->axes)
		return 0;
	uint8_t a = sideof(side, in->arg[0]), b = sideof(side, in->arg[1]);
	if (a == KI_ME && b == KI_MK)
		*eop = KI_RIDX(in->arg[0]), *kop = KI_RIDX(in->arg[1]);
	else if (a == KI_MK && b == KI_ME)
		*eop = KI_RIDX(in->arg[1]), *kop = KI_RIDX(in->arg[0]);
	else
		return 0;
	return 1;
}

void ki_msimform(const KiFn *f, KiRef r, KiMSim *s)
{
	memset(s, 0, sizeof *s);
	s->dot = s->eop = s->kop = -1;
	if (KI_RKIND(r) != RK_INS) {
		s->why = "the similarity is a constant";
		return;
	}
	uint8_t *side = malloc((size_t)f->nins + 1);
	char *reach = calloc((size_t)f->nins + 1, 1);
	if (!side || !reach) {
		s->why = "out of memory";
		goto out;
	}
	ki_msides(f, side);
	reach[KI_RIDX(r)] = 1;
	for (int i = KI_RIDX(r); i >= 0; i--) {
		if (!reach[i] || side[i] != KI_MX)
			continue;          /* values of one row (or neither) are computed per row */
		const KiIns *in = &f->ins[i];
		int eop, kop;
		if (crossdot(f, side, i, &eop, &kop)) {
			if (s->dot >= 0 && s->dot != i) {
				s->why = "the similarity has more than one product of the two rows";
				goto out;
			}
			s->dot = i, s->eop = eop, s->kop = kop;
			continue;
		}
		if (ki_sem(in->op)->kind != SEM_EW || in->axes) {
			s->why = "a value of both rows other than their dot product over chan (e.g. |e - k|)";
			goto out;
		}
		for (int k = 0; k < 3; k++)
			if (KI_RKIND(in->arg[k]) == RK_INS) {
				int a = KI_RIDX(in->arg[k]);
				if (side[a] != KI_MX && f->ins[a].axes) {
					s->why = "a row's value with axes enters the pair epilogue";
					goto out;
				}
				reach[a] = 1;
			}
	}
	if (s->dot < 0) {
		s->why = "the similarity has no product of the two rows";
		goto out;
	}
	for (int i = 0; i <= KI_RIDX(r); i++)
		if (reach[i] && side[i] == KI_MX && i != s->dot) {
			if (s->nepi == (int)(sizeof s->epi / sizeof s->epi[0])) {
				s->why = "the similarity's epilogue is too long";
				goto out;
			}
			s->epi[s->nepi++] = i;
		}
	s->fast = 1;
out:
	free(side);
	free(reach);
}
