/*
** The score epilogues' exp (codegen/x86/gen.h vexpn): exp(x) = 2^n · p(r), x·log2e = n + r,
** |r| <= 1/2, p a degree-6 minimax polynomial of 2^r (Horner, highest degree first), 0 below
** KX_EXPN_LO. One table for the generator and for bench/bench.c's score floor (nexp512), which
** must time the same polynomial.
*/
#ifndef KVCC_X86_EXPPOLY_H
#define KVCC_X86_EXPPOLY_H

#define KX_EXPN_LO (-87.3)
static const double kx_expn_poly[7] = { 1.5345812426e-04, 1.3399930904e-03, 9.6184890717e-03, 5.5503286421e-02,
                                        2.4022646248e-01, 6.9314718246e-01, 1.0 };

#endif
