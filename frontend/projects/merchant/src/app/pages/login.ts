import { Component, inject } from '@angular/core';

import { SignInForm } from '@shared/sign-in';
import { Session } from '../session';

/** A merchant user's sign-in; afterwards, back to the page that asked for it. */
@Component({
  selector: 'pm-login-page',
  imports: [SignInForm],
  template: `
    <pm-sign-in-form heading="Sign in to your paymesh account" home="/home" [signIn]="signIn">
      <p class="muted hint">New here? Ask your team's admin for an invitation.</p>
    </pm-sign-in-form>
  `,
  styles: `.hint { font-size: 0.85rem; margin: 1rem 0 0; }`,
})
export class LoginPage {
  private readonly session = inject(Session);
  readonly signIn = (email: string, password: string): Promise<void> => this.session.signIn(email, password);
}
