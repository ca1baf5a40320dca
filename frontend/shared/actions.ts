import { signal } from '@angular/core';

import { describeError } from './rest';

/** A page's busy flag, error and notice, and the one way its buttons run a call. */
export class Actions {
  readonly busy = signal(false);
  readonly error = signal('');
  readonly notice = signal('');

  /** Runs `action` unless one is running; its error becomes the page's error message. */
  async run(action: () => Promise<void>): Promise<void> {
    if (this.busy()) return;
    this.busy.set(true);
    this.error.set('');
    this.notice.set('');
    try {
      await action();
    } catch (error) {
      this.error.set(describeError(error));
    } finally {
      this.busy.set(false);
    }
  }
}
