/* resume.h: a memory template's clone takes the identity its host sent (resume.c). */
#ifndef YUNSTACK_RESUME_H
#define YUNSTACK_RESUME_H

/* Take the identity whose files are in the directory INCOMING, as yunstack-cloudinit's resume
 * would, without starting a shell.  Returns 0 once the guest has printed YUNSTACK-READY; returns
 * 1, having changed nothing, when the identity is not this code's to take (no "resume" record, or
 * a guest that already has an identity): the caller then runs the shell resume, which says why. */
int take_identity(const char *incoming);

#endif
