import { Component, inject } from '@angular/core';

import { SignInForm } from '@shared/sign-in';
import { Session } from '../session';

/** Operator sign-in; afterwards, back to the page that asked for it. */
@Component({
  selector: 'pm-login-page',
  imports: [SignInForm],
  template: `<pm-sign-in-form heading="Sign in to paymesh" home="/overview" [signIn]="signIn" />`,
})
export class LoginPage {
  private readonly session = inject(Session);
  readonly signIn = (email: string, password: string): Promise<void> => this.session.login(email, password);
}
